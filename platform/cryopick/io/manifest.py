"""Micrograph lists from paths, globs, directories or manifest files (.txt or RELION .star)."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from cryopick.errors import CryopickError
from cryopick.io.micrograph import MRC_SUFFIXES, TIFF_SUFFIXES

MICROGRAPH_SUFFIXES = MRC_SUFFIXES + TIFF_SUFFIXES


def _from_star(path: Path) -> list[Path]:
    import starfile

    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:
        raise CryopickError(f"not a readable STAR file ({exc})", path) from None
    for block in blocks.values():
        if hasattr(block, "columns") and "rlnMicrographName" in block.columns:
            names = [Path(str(n)) for n in block["rlnMicrographName"]]
            # RELION paths are relative to the project directory: try the cwd, then the star's parents
            resolved = []
            for n in names:
                if n.is_absolute() or n.exists():
                    resolved.append(n)
                    continue
                for base in path.resolve().parents:
                    if (base / n).exists():
                        resolved.append(base / n)
                        break
                else:
                    resolved.append(n)
            return resolved
    raise CryopickError("no data block with _rlnMicrographName", path)


def _from_txt(path: Path) -> list[Path]:
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line)
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def check_unique_stems(micrographs: Iterable[Path]) -> None:
    """Raise if two micrographs share a file stem: their outputs (picks, heatmaps, labels) are named by stem."""
    seen: dict[str, Path] = {}
    for mic in micrographs:
        if mic.stem in seen:
            raise CryopickError(f"two micrographs share the name {mic.stem!r} ({seen[mic.stem]} and {mic}); "
                                "their output files would collide: rename one or pick them into separate directories")
        seen[mic.stem] = mic


def output_dir(path: Path) -> Path:
    """``path`` as an output directory: created if missing; a clear error if it is a file or cannot be made."""
    if path.exists() and not path.is_dir():
        raise CryopickError("is a file, not a directory: give a new or existing directory for the output", path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CryopickError(f"cannot create the output directory ({exc.strerror})", path) from None
    return path


def resolve_micrographs(items: Iterable[str | Path], must_exist: bool = True) -> list[Path]:
    """Expand paths, globs, directories and manifests into a sorted, de-duplicated list.

    Raises:
        CryopickError: a pattern matching nothing, or (with ``must_exist``) a listed file missing.
    """
    found: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix.lower() in MICROGRAPH_SUFFIXES)
        elif p.suffix.lower() == ".star" and p.is_file():
            found += _from_star(p)
        elif p.suffix.lower() in (".txt", ".lst") and p.is_file():
            found += _from_txt(p)
        elif any(ch in str(item) for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(str(item)))
            if not matches:
                raise CryopickError(f"pattern {item!r} matches no file")
            found += matches
        else:
            found.append(p)
    unique = list(dict.fromkeys(found))  # first occurrence wins, order kept
    if must_exist:
        for p in unique:
            if not p.is_file():
                raise CryopickError("no such micrograph file", p)
    if not unique:
        raise CryopickError("no micrographs given")
    return unique
