"""Write one benchmark's figures into its own section of ``docs/benchmarks.md``.

Each script owns the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->``, so scripts
run independently (and re-runs replace their old figures) without touching each other's sections.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
HEADER = "# cryopick benchmarks\n\nEvery figure below was measured by the script named in its section; rerun it to refresh.\n"


def machine() -> str:
    """One line: CPU model, cores, memory, GPU if any, date."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
        torch_v = f", torch {torch.__version__}"
    except ImportError:
        torch_v = ""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores{mem}, {gpu}{torch_v}; {_dt.date.today().isoformat()}"


def command() -> str:
    path = Path(sys.argv[0]).resolve()
    script = str(path.relative_to(REPO)) if path.exists() and path.is_relative_to(REPO) else sys.argv[0]
    return "python " + shlex.join([script, *sys.argv[1:]])  # quoted so that the line can be pasted


def git_rev() -> str:
    """The checked-out commit, with ``-dirty`` when the product code (``platform/``, ``pipelines/``) differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    try:
        rev = git("rev-parse", "--short", "HEAD")
        return rev + "-dirty" if git("status", "--porcelain", "--", "platform", "pipelines") else rev
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def update_section(name: str, title: str, body: str, doc: Path = DOC, commits: list[str] | None = None,
                   machines: list[str | None] | None = None) -> None:
    """Replace (or append) section ``name`` with ``body``, stamped with command, machine and commit.

    ``commits``: the commits the figures were measured on, when a merge of cached runs writes them (the
    checked-out commit is then only where they were merged). ``machines``: the machine line each of those runs
    recorded (:func:`machine`), None for a run that recorded none; the section then names the runs' machines, not
    the merging one, and for runs without a record keeps what the section said before.
    """
    rev = git_rev()
    stamp = rev if not commits or commits == [rev] else f"{', '.join(commits)} (the runs); merged at {rev}"
    text = doc.read_text() if doc.exists() else HEADER
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    where = machine() if machines is None else runs_machines(machines, pattern.search(text))
    block = (
        f"<!-- BEGIN {name} -->\n## {title}\n\n"
        f"Command: `{command()}`  \nMachine: {where}  \nCommit: {stamp}\n\n{body.strip()}\n<!-- END {name} -->"
    )
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = doc.with_suffix(".md.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(text)
    tmp.replace(doc)
    print(block)


def runs_machines(machines: list[str | None], section: re.Match[str] | None) -> str:
    """The Machine line of a merge: each machine its runs recorded, with how many runs; runs that recorded none
    keep the line the section had (a merge must not claim the merging machine for them)."""
    known = sorted({m for m in machines if m})
    parts = [f"{m} ({_runs(machines.count(m))})" if len(known) > 1 or None in machines else m for m in known]
    missing = machines.count(None)
    if missing:
        before = re.search(r"^Machine: (.*?)\s*$", section.group(0), re.M) if section else None
        old = re.sub(r"\s*\(the section's earlier line, for .*$", "", before.group(1)) if before else "not recorded"
        parts.insert(0, f"{old} (the section's earlier line, for {_runs(missing)} that recorded no machine)")
    return "; ".join(parts) or machine()


def batch_sizes(records: list[dict], default: int) -> str:
    """The patches per step and worker of merged runs, as text ("4" or "4 or 8"): each record's ``batch_size``, else
    its command line's ``--batch-size``, else ``default`` (the script's default when the run predates the field)."""
    sizes = set()
    for r in records:
        argv = r.get("argv", [])
        given = argv[argv.index("--batch-size") + 1] if "--batch-size" in argv[:-1] else None
        sizes.add(int(r.get("batch_size") or given or default))
    return " or ".join(str(b) for b in sorted(sizes))


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"
