"""``superpoints`` and ``decoder`` stages: VCCS superpoints of a 50k-point cloud; the query decoder and
post-processing on its superpoints."""
from __future__ import annotations

import torch

from ..data.synthetic import synthetic_room_cloud
from ..models.decoder import DecoderConfig, QueryDecoder, SemanticHead, pad_superpoints
from ..models.postprocess import postprocess
from ..models.superpoints import SuperpointConfig, compute_superpoints, pool_mean
from .common import time_fn


def _cloud(n_points: int, device):
    pts, cols, _ = synthetic_room_cloud(seed=0)
    idx = torch.randperm(len(pts), generator=torch.Generator().manual_seed(0))[:n_points]
    return pts[idx].to(device), cols[idx].to(device)


def run_superpoints(args) -> dict:
    dev = torch.device(args.device)
    pts, cols = _cloud(args.points, dev)
    cfg = SuperpointConfig()
    sp = compute_superpoints(pts, cols, cfg)
    t = time_fn(lambda: compute_superpoints(pts, cols, cfg), dev, args.repeats)
    print(f"superpoints: {args.points} points -> {sp.count} superpoints in {t['median_s'] * 1e3:.1f} ms (median)")
    return {"stage": "superpoints", "device": args.device, "points": args.points, "superpoints": sp.count,
            "config": vars(cfg), "time": t}


def run_decoder(args) -> dict:
    dev = torch.device(args.device)
    torch.manual_seed(0)
    pts, cols = _cloud(args.points, dev)
    sp = compute_superpoints(pts, cols)
    fused = torch.nn.functional.normalize(torch.randn(len(pts), 256, device=dev), dim=1)
    dec = QueryDecoder(DecoderConfig()).to(dev).eval()
    sem = SemanticHead(256, 200, open_vocab=False).to(dev).eval()
    names = [f"class{i}" for i in range(200)]
    lo, hi = pts.min(0).values, pts.max(0).values
    centres = (sp.centres - (lo + hi) / 2) / (hi - lo).norm()

    def run_dec():
        with torch.inference_mode():
            x, c, pad = pad_superpoints([pool_mean(fused, sp.ids, sp.count)], [centres])
            return dec(x, c, pad)

    def run_post():
        with torch.inference_mode():
            out = run_dec()
            return postprocess(out.class_logits[0].cpu(), out.mask_logits[0].cpu(), out.objectness[0].cpu(),
                               sem(fused).cpu(), sp.ids.cpu(), sp.centres.cpu(), pts.cpu(), names)

    t_dec = time_fn(run_dec, dev, args.repeats)
    t_all = time_fn(run_post, dev, args.repeats)
    print(f"decoder: {sp.count} superpoint queries + 16 learnable, 3 layers: {t_dec['median_s'] * 1e3:.1f} ms; "
          f"with post-processing {t_all['median_s'] * 1e3:.1f} ms (median)")
    return {"stage": "decoder", "device": args.device, "superpoints": sp.count, "decoder": t_dec,
            "decoder_postprocess": t_all}


def add_args(p) -> None:
    p.add_argument("--points", type=int, default=50000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
