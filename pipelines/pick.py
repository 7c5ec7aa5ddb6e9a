"""Picking campaign as a Ray job: ``ray job submit -- python pipelines/pick.py --config ...``.

A thin entry point over ``cryopick campaign`` (same flags, same YAML): micrographs are streamed
through a Ray Data actor pool that loads the model once per actor, writes one coordinate file
per micrograph atomically, and records bad micrographs in OUT/failures.tsv; rerunning resumes.
Inside a submitted job Ray is already running (RAY_ADDRESS is set), so resources are only
passed to a local Ray only (``cryopick.distributed.connect``). Paths must be visible from every node (shared storage).
Exit status: 0 all picked, 1 some micrographs failed, 2 bad arguments or config.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from cryopick.cli.campaign import add_args

    parser = argparse.ArgumentParser(prog="pipelines/pick.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(parser)
    parser.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (ignored when RAY_ADDRESS is set)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cryopick.batch.run import run_batch
    from cryopick.cli.campaign import resolve
    from cryopick.errors import CryopickError

    try:
        model, micrographs, out, cfg, engine = resolve(args)  # every path checked before Ray starts
        if engine == "ray":
            from cryopick.distributed.connect import ray_session

            from cryopick.distributed.batch import ray_rows

            with ray_session(num_cpus=args.num_cpus):  # a submitted job joins its cluster; num_cpus is for a local Ray
                summary = run_batch(model, micrographs, out, cfg, ray_rows, progress=not args.quiet)
        else:
            summary = run_batch(model, micrographs, out, cfg, "local", progress=not args.quiet)
    except CryopickError as exc:
        print(f"pipelines/pick.py: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary.lines()))
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
