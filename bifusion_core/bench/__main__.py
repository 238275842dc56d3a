"""``python -m bifusion_core.bench STAGE [--json FILE]``: print figures and write them as JSON."""
from __future__ import annotations

import argparse
import sys

from . import sparse
from .common import machine, write_json

STAGES = {"sparse": sparse}


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
            sp = argparse.ArgumentParser()
            mod.add_args(sp)
            out["stages"][name] = mod.run(sp.parse_args([]))
    else:
        out = {"machine": machine(), **STAGES[args.stage].run(args)}
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
