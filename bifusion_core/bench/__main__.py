"""``python -m bifusion_core.bench STAGE [--json FILE]``: print figures and write them as JSON."""
from __future__ import annotations

import argparse
import sys

from . import decoder, encoder, gpu, mapping, pipeline, soak, sparse
from .common import machine, write_json

class _Stage:
    def __init__(self, doc, run, add_args):
        self.__doc__, self.run, self.add_args = doc, run, add_args


STAGES = {
    "sparse": sparse,
    "superpoints": _Stage("``superpoints`` stage: VCCS superpoints of a 50k-point synthetic cloud.",
                          decoder.run_superpoints, decoder.add_args),
    "encoder": _Stage("``encoder`` stage: per-stage latency of the encoder on one 640x480 frame.",
                      encoder.run_encoder, encoder.add_args),
    "frame": _Stage("``frame`` stage: whole single-frame inference (encoder + superpoints + decoder) at 640x480.",
                    encoder.run_frame, encoder.add_args),
    "pipeline": _Stage("``pipeline`` stage: end-to-end per-frame latency p50/p95 and throughput at 640x480.",
                       pipeline.run_pipeline, pipeline.add_pipeline_args),
    "train": _Stage("``train`` stage: training iterations/s and peak memory.", pipeline.run_train,
                    pipeline.add_train_args),
    "map": _Stage("``map`` stage: online instance map merge latency (10/50/100 instances) and memory over 1000 "
                  "frames.", mapping.run, mapping.add_args),
    "soak": _Stage("``soak`` stage: 10,000 frames through the node's session (model, map, bad sets mixed in): "
                   "RSS and frame time stay flat, every counter adds up.", soak.run, soak.add_args),
    "gpu": _Stage("``gpu`` stage: one command for a lent GPU machine: per-stage latency and FPS at 640x480 in fp32 "
                  "and fp16 (full design, synthetic_small), sparse backends, a scannet200 training step at batch 8.",
                  gpu.run, gpu.add_args),
    "decoder": _Stage("``decoder`` stage: query decoder + post-processing on the superpoints of 50k points.",
                      decoder.run_decoder, decoder.add_args),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bifusion_core.bench", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)
    for name, mod in STAGES.items():
        p = sub.add_parser(name, help=mod.__doc__.splitlines()[0], description=mod.__doc__)
        p.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
        mod.add_args(p)
    p = sub.add_parser("all", help="every stage with its defaults")
    p.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    if args.stage == "all":
        out = {"machine": machine(), "stages": {}}
        for name, mod in STAGES.items():
            if name in ("soak", "gpu"):  # runs of their own: python -m bifusion_core.bench soak / gpu
                continue
            sp = argparse.ArgumentParser()
            mod.add_args(sp)
            out["stages"][name] = mod.run(sp.parse_args([]))
    else:
        out = {"machine": machine(), **STAGES[args.stage].run(args)}
    write_json(args.json, out)
    return int(out.get("exit_code", 0))


if __name__ == "__main__":
    sys.exit(main())
