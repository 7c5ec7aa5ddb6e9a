"""Self-training campaign as a Ray job: ``ray job submit -- python pipelines/self_train.py --config ...``.

A thin entry point over ``cryopick selftrain`` (same flags, same YAML, same campaign directory):
round 0 trains on the labeled micrographs with Ray Train, each later round pseudo-labels the
unlabeled ones with a Ray Data actor pool and retrains, Ray Tune picks the threshold and peak
distance, and MLflow tracks every round. Rerunning with the same --out resumes after the last
complete round.

Inside a submitted job Ray is already running (RAY_ADDRESS is set), so resources are passed to
Ray only for a local run (``cryopick.distributed.connect``). Shell variables do not reach a job: pass settings as flags or
through ``--runtime-env-json '{"env_vars": {...}}'``, and use absolute paths and MLflow URIs on
storage every node sees. Exit status: 0 done, 2 bad arguments or config.

Example (a local head at 127.0.0.1:8265):
  ray job submit --address http://127.0.0.1:8265 -- \\
      python "$PWD/pipelines/self_train.py" --config "$PWD/pipelines/configs/tiny_cpu.yaml" --out /tmp/campaigns/tiny
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from cryopick.cli.selftrain import add_args

    parser = argparse.ArgumentParser(prog="pipelines/self_train.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cryopick.runtime import configure_cpu_env

    configure_cpu_env()  # before torch loads
    from cryopick.cli import selftrain
    from cryopick.distributed.orchestrator import run_campaign
    from cryopick.errors import CryopickError
    from cryopick.selftrain.config import resolve_data

    try:
        cfg = selftrain.resolve_config(args)
        resolve_data(cfg)  # every path checked before a cluster is asked to do anything
        selftrain.report(run_campaign(cfg, progress=args.verbose, verbose=args.verbose))  # connects to Ray (cryopick.distributed.connect)
        return 0
    except CryopickError as exc:
        print(f"pipelines/self_train.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
