"""A benchmark arm's cached result: ``<dest>/summary.json``, written atomically when the arm has finished.

An arm's outputs (models, heatmaps) stay in ``benchmarks/out/`` (ignored by git, lost with the checkout); its
summary is also kept in the repository under ``benchmarks/records/`` at the same relative path, so that a merge
rebuilds a table from every run on record, not only from the runs of this checkout.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from _report import git_rev, machine

SUMMARY = "summary.json"
BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
RECORDS = BENCH / "records"


def records(root: Path) -> Path:
    """The record folder matching ``root`` (a folder under ``benchmarks/out/``); ``root`` itself if outside it."""
    try:
        return RECORDS / root.resolve().relative_to(OUT.resolve())
    except ValueError:
        return root


def start(dest: Path, again: bool) -> bool:
    """True if the arm in ``dest`` is to run: no summary yet (in ``dest`` or on record), or ``again``.

    ``again`` clears ``dest`` first; the record is replaced only when the new run finishes.
    """
    for summary in (dest / SUMMARY, records(dest) / SUMMARY):
        if summary.is_file() and not again:
            print(f"{summary} exists (--again to rerun)")
            return False
    if again and dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True, exist_ok=True)
    return True


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def finish(dest: Path, result: dict[str, Any]) -> None:
    """Write ``dest/summary.json`` and its record atomically (their presence marks the arm done), with the commit
    and the machine it ran on."""
    result = {**result, "commit": result.get("commit") or git_rev(), "machine": result.get("machine") or machine()}
    text = json.dumps(result, indent=1)
    _write(dest / SUMMARY, text)
    if records(dest) != dest:
        _write(records(dest) / SUMMARY, text)
