"""The merged benchmark sections name the machines and batch sizes their runs recorded, not the merging machine's."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _report import batch_sizes, runs_machines, update_section  # noqa: E402


def _section(machine_line: str) -> re.Match[str]:
    match = re.search(r".*", f"<!-- BEGIN x -->\n## t\n\nCommand: c  \nMachine: {machine_line}  \nCommit: a\n", re.S)
    assert match is not None
    return match


def test_runs_without_a_machine_keep_the_section_line_and_rerendering_does_not_stack() -> None:
    first = runs_machines([None, None, "EPYC; 2026-12-06"], _section("Xeon; 2026-12-05"))
    assert first == "Xeon; 2026-12-05 (the section's earlier line, for 2 runs that recorded no machine); EPYC; 2026-12-06 (1 run)"
    again = runs_machines([None, "EPYC; 2026-12-06", "EPYC; 2026-12-06"], _section(first))
    assert again == "Xeon; 2026-12-05 (the section's earlier line, for 1 run that recorded no machine); EPYC; 2026-12-06 (2 runs)"
    assert runs_machines(["A", "A"], None) == "A"


def test_merged_section_names_the_runs_machine(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    update_section("x", "T", "body", doc=doc, commits=["abc"], machines=["Some CPU, 2 cores; 2026-12-01"])
    assert "Machine: Some CPU, 2 cores; 2026-12-01  \n" in doc.read_text()


def test_batch_sizes_from_record_then_command_line_then_default() -> None:
    records = [{"argv": ["x", "--batch-size", "8"]}, {"batch_size": 4, "argv": []}, {"argv": ["x"]}]
    assert batch_sizes(records, 8) == "4 or 8"
    assert batch_sizes([{"argv": ["x"]}], 4) == "4"
