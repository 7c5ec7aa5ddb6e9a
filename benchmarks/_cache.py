"""A benchmark arm's cached result: ``<dest>/summary.json``, written atomically when the arm has finished."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from _report import git_rev

SUMMARY = "summary.json"


def start(dest: Path, again: bool) -> bool:
    """True if the arm in ``dest`` is to run: no summary yet, or ``again`` (then ``dest`` is cleared first)."""
    summary = dest / SUMMARY
    if summary.is_file() and not again:
        print(f"{summary} exists (--again to rerun)")
        return False
    if again and dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True, exist_ok=True)
    return True


def finish(dest: Path, result: dict[str, Any]) -> None:
    """Write ``dest/summary.json`` atomically (its presence marks the arm done), with the commit it ran on."""
    result = {**result, "commit": result.get("commit") or git_rev()}
    tmp = dest / (SUMMARY + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(dest / SUMMARY)
