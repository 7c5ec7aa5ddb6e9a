"""cryopick: self-training U-Net particle picking for cryo-EM."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Sequence

# Command name -> module; modules are imported only to build their own parser.
COMMANDS = {
    "simulate": "cryopick.cli.simulate",
    "train": "cryopick.cli.train",
    "pick": "cryopick.cli.pick",
    "evaluate": "cryopick.cli.evaluate",
    "selftrain": "cryopick.cli.selftrain",
    "campaign": "cryopick.cli.campaign",
    "dashboard": "cryopick.cli.dashboard",
    "suggest": "cryopick.cli.suggest",
    "label": "cryopick.cli.label",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cryopick", description=__doc__)
    from cryopick import __version__

    parser.add_argument("--version", action="version", version=f"cryopick {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # command not built yet in this checkout
            raise
        doc = (module.__doc__ or "").strip()
        p = sub.add_parser(
            name, help=doc.splitlines()[0] if doc else name, description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_args(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; user errors print one line and exit 2, never a traceback."""
    from cryopick.runtime import configure_cpu_env

    configure_cpu_env()  # before any command module imports torch
    from cryopick.errors import CryopickError

    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (kill, a scheduler's stop) unwinds like Ctrl-C: a local Ray and other children are shut down
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(args._main(args) or 0)
    except CryopickError as exc:
        print(f"cryopick {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cryopick {args.command}: interrupted; finished outputs are kept", file=sys.stderr)
        return 130


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
