"""Particle coordinate files: RELION ``.star``, EMAN2/crYOLO ``.box``, ``.csv`` and Topaz ``.txt``.

Coordinates are particle centres in pixels of the ORIGINAL micrograph, ``x`` = column and
``y`` = row of ``data[y, x]``. Every reader returns ``(xy, scores)``:

    xy:     (N, 2) float64, columns x, y
    scores: (N,) float64; 1.0 where the file carries no score

``.box`` files store the lower-left corner of a ``box_size`` box (EMAN2 convention), so the
writer needs the box size and the reader recovers the centre from the box columns.
"""

from __future__ import annotations

import csv
import io as _io
from pathlib import Path

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from cryopick.errors import CryopickError
from cryopick.io.atomic import atomic_write, write_text_atomic

if TYPE_CHECKING:
    import pandas as pd


class Box(NamedTuple):
    """A region of a micrograph in ORIGINAL pixels: [x0, x1) × [y0, y1) (a labeled box, a suggested region)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def of(cls, values: Sequence[float | str]) -> Box:
        """A box from any four numbers (a sidecar's list, a CSV row), as floats."""
        x0, y0, x1, y1 = (float(v) for v in values)
        return cls(x0, y0, x1, y1)


def inside_boxes(xy: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """(N,) bool: which (x, y) lie in any of ``boxes``."""
    keep = np.zeros(len(xy), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        keep |= (xy[:, 0] >= x0) & (xy[:, 0] < x1) & (xy[:, 1] >= y0) & (xy[:, 1] < y1)
    return keep


def _finish(path: Path, xy: np.ndarray, scores: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    scores = np.ones(len(xy)) if scores is None else np.asarray(scores, dtype=np.float64)
    if not (np.isfinite(xy).all() and np.isfinite(scores).all()):
        raise CryopickError("coordinate file contains NaN or infinite values", path)
    return xy, scores


def _read_star(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd
    import starfile

    try:
        data = starfile.read(path, always_dict=True)
    except Exception as exc:
        raise CryopickError(f"not a readable STAR file ({exc})", path) from None
    for block in data.values():
        if isinstance(block, pd.DataFrame) and {"rlnCoordinateX", "rlnCoordinateY"} <= set(block):
            try:
                xy = block[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(dtype=np.float64)
                score = block.get("rlnAutopickFigureOfMerit")
                scores = None if score is None else score.to_numpy(dtype=np.float64)
            except (TypeError, ValueError):
                raise CryopickError("coordinate columns hold non-numeric values", path) from None
            return _finish(path, xy, scores)
    raise CryopickError("no data block with _rlnCoordinateX and _rlnCoordinateY", path)


def _read_table(path: Path, sep: str) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_csv(path, sep=sep, comment="#")
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except Exception as exc:
        raise CryopickError(f"not a readable table ({exc})", path) from None


def _pick_columns(path: Path, df: pd.DataFrame, xs: tuple[str, ...], ys: tuple[str, ...]) -> np.ndarray:
    cols = {c.strip().lower(): c for c in df.columns}
    x = next((cols[c] for c in xs if c in cols), None)
    y = next((cols[c] for c in ys if c in cols), None)
    if x is None or y is None:
        raise CryopickError(f"expected columns {xs[0]!r} and {ys[0]!r}, found {list(df.columns)}", path)
    try:
        return df[[x, y]].to_numpy(dtype=np.float64)
    except ValueError:
        raise CryopickError("coordinate columns hold non-numeric values", path) from None


def _score_column(df: pd.DataFrame) -> np.ndarray | None:
    import pandas as pd

    for c in df.columns:
        if c.strip().lower() in ("score", "confidence", "rlnautopickfigureofmerit"):
            return pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
    return None


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    df = _read_table(path, ",")
    if df.empty:
        return _finish(path, np.zeros((0, 2)), None)
    return _finish(path, _pick_columns(path, df, ("x",), ("y",)), _score_column(df))


def _read_txt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    df = _read_table(path, "\t")
    if df.empty:
        return _finish(path, np.zeros((0, 2)), None)
    return _finish(path, _pick_columns(path, df, ("x_coord", "x"), ("y_coord", "y")), _score_column(df))


def _read_box(path: Path) -> tuple[np.ndarray, np.ndarray]:
    text = path.read_text()
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not rows:
        return _finish(path, np.zeros((0, 2)), None)
    try:
        arr = np.array([[float(v) for v in r[:5]] for r in rows if len(r) >= 4])
    except ValueError:
        raise CryopickError("box rows must hold numbers: x y width height [score]", path) from None
    if len(arr) != len(rows):
        raise CryopickError("every box row needs at least 4 columns: x y width height", path)
    centres = arr[:, :2] + arr[:, 2:4] / 2.0
    return _finish(path, centres, arr[:, 4] if arr.shape[1] >= 5 else None)


def _write_star(path: Path, xy: np.ndarray, scores: np.ndarray, box_size: float | None) -> None:
    import pandas as pd
    import starfile

    df = pd.DataFrame({"rlnCoordinateX": xy[:, 0], "rlnCoordinateY": xy[:, 1], "rlnAutopickFigureOfMerit": scores})
    with atomic_write(path, suffix=".star") as tmp:
        starfile.write(df, tmp, float_format="%.6f")


def _write_box(path: Path, xy: np.ndarray, scores: np.ndarray, box_size: float | None) -> None:
    if not box_size or box_size <= 0:
        raise CryopickError("writing .box files needs a positive box size", path)
    corners = xy - box_size / 2.0
    lines = [f"{cx:.2f}\t{cy:.2f}\t{box_size:g}\t{box_size:g}\t{s:.6f}" for (cx, cy), s in zip(corners, scores)]
    write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))


def _write_csv(path: Path, xy: np.ndarray, scores: np.ndarray, box_size: float | None) -> None:
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["x", "y", "score"])
    writer.writerows((f"{x:.3f}", f"{y:.3f}", f"{s:.6f}") for (x, y), s in zip(xy, scores))
    write_text_atomic(path, buf.getvalue())


def _write_txt(path: Path, xy: np.ndarray, scores: np.ndarray, box_size: float | None) -> None:
    """Topaz: image_name, x_coord, y_coord, score, tab separated."""
    rows = "".join(f"{path.stem}\t{x:.3f}\t{y:.3f}\t{s:.6f}\n" for (x, y), s in zip(xy, scores))
    write_text_atomic(path, "image_name\tx_coord\ty_coord\tscore\n" + rows)


Reader = Callable[[Path], "tuple[np.ndarray, np.ndarray]"]
Writer = Callable[[Path, np.ndarray, np.ndarray, "float | None"], None]


@dataclass(frozen=True)
class CoordFormat:
    """One coordinate file format: its name (as the CLI spells it), file suffix, reader and writer."""

    name: str
    suffix: str
    read: Reader
    write: Writer
    description: str


# The registry: the one place to add a coordinate format. CLI choices, file matching by stem and
# the readers/writers below all come from it.
FORMATS: dict[str, CoordFormat] = {f.name: f for f in (
    CoordFormat("star", ".star", _read_star, _write_star, "RELION (rlnCoordinateX/Y, rlnAutopickFigureOfMerit)"),
    CoordFormat("box", ".box", _read_box, _write_box, "EMAN2/crYOLO box corners"),
    CoordFormat("csv", ".csv", _read_csv, _write_csv, "x,y,score"),
    CoordFormat("txt", ".txt", _read_txt, _write_txt, "Topaz image_name/x_coord/y_coord/score"),
)}
COORD_SUFFIXES = tuple(f.suffix for f in FORMATS.values())
_BY_SUFFIX = {f.suffix: f for f in FORMATS.values()}


def read_coords(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read particle centres and scores from any registered format (chosen by the file's suffix).

    Returns:
        xy: (N, 2) float64 centres (x, y) in original micrograph pixels.
        scores: (N,) float64, 1.0 where the file has none.
    """
    path = Path(path)
    if not path.is_file():
        raise CryopickError("no such coordinate file", path)
    fmt = _BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise CryopickError(f"unknown coordinate format {path.suffix!r} (use {', '.join(COORD_SUFFIXES)})", path)
    try:
        return fmt.read(path)
    except UnicodeDecodeError:
        raise CryopickError(f"not a text file: {fmt.name} coordinates are text", path) from None


def write_coords(
    path: str | Path,
    xy: np.ndarray,
    scores: np.ndarray | None = None,
    fmt: str | None = None,
    box_size: float | None = None,
) -> Path:
    """Write particle centres atomically; the format comes from ``fmt`` or the suffix.

    Args:
        xy: (N, 2) centres in original micrograph pixels.
        scores: (N,) pick scores; written where the format holds them.
        box_size: box edge in pixels, required for ``box`` (corner = centre - box/2).
    """
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise CryopickError(f"unknown coordinate format {fmt!r} (use {', '.join(FORMATS)})", path)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    scores = np.ones(len(xy)) if scores is None else np.asarray(scores, dtype=np.float64)
    FORMATS[fmt].write(path, xy, scores, box_size)
    return path


def find_coords_file(directory: str | Path, stem: str) -> Path | None:
    """The coordinate file for micrograph ``stem`` in ``directory`` (matched by file stem)."""
    directory = Path(directory)
    for suffix in COORD_SUFFIXES:
        candidate = directory / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def duplicate_distance(diameter: float) -> float:
    """Picks closer than this (px) are one particle picked twice: a tenth of the diameter, at least 2 px."""
    return max(2.0, 0.1 * diameter)


def drop_duplicate_picks(xy: np.ndarray, diameter: float) -> tuple[np.ndarray, int]:
    """(N, 2) picks -> the picks with later duplicates (within :func:`duplicate_distance`) removed, and how many were."""
    from scipy.spatial import cKDTree

    if len(xy) < 2:
        return xy, 0
    keep = np.ones(len(xy), dtype=bool)
    for i, j in sorted(cKDTree(xy).query_pairs(duplicate_distance(diameter))):
        if keep[i] and keep[j]:
            keep[j] = False
    return xy[keep], int((~keep).sum())


def check_inside(xy: np.ndarray, shape: tuple[int, int], path: str | Path) -> None:
    """Raise if any centre lies outside an image of ``shape`` = (H, W)."""
    h, w = shape
    bad = (xy[:, 0] < -0.5) | (xy[:, 0] > w - 0.5) | (xy[:, 1] < -0.5) | (xy[:, 1] > h - 0.5)
    if bad.any():
        x, y = xy[np.argmax(bad)]
        raise CryopickError(
            f"{int(bad.sum())} coordinate(s) outside the {w}x{h} micrograph, e.g. ({x:g}, {y:g})", path
        )
