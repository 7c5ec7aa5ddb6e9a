"""Read micrographs (MRC via ``mrcfile``, TIFF via ``tifffile``) into float32 arrays.

Every failure becomes a :class:`CryopickError` naming the file, never a library traceback.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cryopick.errors import CryopickError
from cryopick.io.atomic import atomic_write

MRC_SUFFIXES = (".mrc", ".mrcs", ".map", ".rec")
TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class Micrograph:
    """A 2-D micrograph.

    Attributes:
        data: (H, W) float32 image; ``data[y, x]``.
        pixel_size: Å per pixel, or None when neither the header nor the user gave one.
        path: the file it was read from.
    """

    data: np.ndarray
    pixel_size: float | None
    path: Path

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.data.shape[0]), int(self.data.shape[1]))

    @property
    def name(self) -> str:
        return self.path.stem


def _to_2d(data: np.ndarray, path: Path) -> np.ndarray:
    """Accept (H, W) or a one-frame stack (1, H, W); reject anything else."""
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise CryopickError(
            f"expected a 2-D micrograph or a one-frame stack, got shape {tuple(data.shape)}", path
        )
    if min(data.shape) < 16:
        raise CryopickError(f"micrograph is only {data.shape[1]}x{data.shape[0]} pixels", path)
    return data


def _read_mrc(path: Path) -> tuple[np.ndarray, float | None]:
    import mrcfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mrcfile warns on odd headers; we check what matters
            _check_declared_size(path)
            with mrcfile.open(path, mode="r", permissive=False) as mrc:
                data = np.asarray(mrc.data)
                voxel = float(mrc.voxel_size.x)
    except (ValueError, OSError, EOFError, OverflowError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CryopickError(f"not a readable MRC file ({reason})", path) from None
    if data is None or data.size == 0:
        raise CryopickError("MRC file holds no image data", path)
    if np.iscomplexobj(data):  # modes 3/4: a Fourier transform, not an image
        raise CryopickError(f"MRC holds complex values (dtype {data.dtype}), not a real-space micrograph", path)
    return data, (voxel if voxel > 0 else None)


def _check_declared_size(path: Path) -> None:
    """Refuse a header that declares more data than the file holds, before anything that size is allocated.

    mrcfile allocates the declared data block before it finds the file short, so a corrupt size field would take
    gigabytes of memory on the way to its error.
    """
    import mrcfile
    from mrcfile.utils import data_dtype_from_header, data_shape_from_header

    with mrcfile.open(path, mode="r", permissive=False, header_only=True) as mrc:
        header = mrc.header
        shape = data_shape_from_header(header)
        declared = int(np.prod(shape, dtype=object)) * data_dtype_from_header(header).itemsize
        declared += int(header.nsymbt) + header.nbytes
    size = path.stat().st_size
    if declared > size:
        raise ValueError(f"header declares {'x'.join(map(str, shape[::-1]))} values ({declared} bytes) but the file "
                         f"holds {size}: truncated or a corrupt header")


def _read_tiff(path: Path) -> tuple[np.ndarray, float | None]:
    import tifffile

    try:
        data = tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise CryopickError(f"not a readable TIFF file ({exc})", path) from None
    return np.asarray(data), None


def read_micrograph(path: str | Path, pixel_size: float | None = None) -> Micrograph:
    """Read one micrograph as float32 and check it is usable.

    Args:
        path: an MRC (any of modes 0, 1, 2, 6, 12) or TIFF file.
        pixel_size: Å/px; overrides the header when given.

    Raises:
        CryopickError: missing, truncated or unreadable file; not 2-D; NaN/inf; constant image.
    """
    path = Path(path)
    if not path.is_file():
        raise CryopickError("no such micrograph file", path)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        data, header_px = _read_tiff(path)
    elif suffix in MRC_SUFFIXES:
        data, header_px = _read_mrc(path)
    else:
        raise CryopickError(
            f"unknown micrograph type {suffix!r} (use {', '.join(MRC_SUFFIXES + TIFF_SUFFIXES)})",
            path,
        )
    data = _to_2d(data, path).astype(np.float32, copy=True)
    if not np.isfinite(data).all():
        raise CryopickError("micrograph contains NaN or infinite values", path)
    if float(data.max()) == float(data.min()):
        raise CryopickError(f"micrograph is constant (every pixel is {float(data.min()):g})", path)
    if pixel_size is not None and pixel_size <= 0:
        raise CryopickError(f"pixel size must be positive, got {pixel_size}", path)
    return Micrograph(data=data, pixel_size=pixel_size or header_px, path=path)


def read_shape(path: str | Path) -> tuple[int, int]:
    """(H, W) of a micrograph from its header where the format has one (MRC, TIFF)."""
    path = Path(path)
    try:
        if path.suffix.lower() in {".mrc", ".mrcs", ".map"}:
            import mrcfile

            with mrcfile.open(path, header_only=True, permissive=True) as m:
                return int(m.header.ny), int(m.header.nx)
        if path.suffix.lower() in {".tif", ".tiff"}:
            import tifffile

            with tifffile.TiffFile(path) as t:
                shape = t.pages[0].shape
                return int(shape[0]), int(shape[1])
    except Exception:  # an unreadable header: the full reader below names the problem
        pass
    return read_micrograph(path).data.shape


def read_pixel_size(path: str | Path) -> float | None:
    """Å/px from a micrograph's header (MRC voxel size, TIFF resolution tags), None when it has none."""
    path = Path(path)
    if path.suffix.lower() in MRC_SUFFIXES and path.is_file():
        import mrcfile

        try:
            with mrcfile.open(path, header_only=True, permissive=True) as m:
                px = float(m.voxel_size.x)
            return px if px > 0 else None
        except Exception:  # an unreadable header: the full reader names the problem
            pass
    return read_micrograph(path).pixel_size


_ANGSTROM = ("a", "å", "ang", "angstrom")


def diameter_in_pixels(text: str | float, pixel_size: float | None = None, micrograph: str | Path | None = None) -> float:
    """A particle diameter given as ``180``/``180px`` (pixels) or ``150A``/``150Å`` (ångström) -> pixels.

    Ångström need a pixel size: ``pixel_size`` when given (``--pixel-size``), else ``micrograph``'s header.
    """
    raw = str(text).strip()
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyzåÅABCDEFGHIJKLMNOPQRSTUVWXYZ ")
    unit = raw[len(number):].strip().lower()
    try:
        value = float(number)
    except ValueError:
        raise CryopickError(f"particle diameter {raw!r} is not a number of pixels (180, 180px) or ångström (150A)") from None
    if unit not in ("", "px", *_ANGSTROM):
        raise CryopickError(f"particle diameter {raw!r}: unknown unit {unit!r} (px or A)")
    if not value > 0:
        raise CryopickError(f"particle diameter must be positive, got {raw!r}")
    if unit in ("", "px"):
        return value
    px = pixel_size if pixel_size is not None else (read_pixel_size(micrograph) if micrograph is not None else None)
    if not px:
        where = f" (none in the header of {micrograph})" if micrograph is not None else ""
        raise CryopickError(f"particle diameter {raw!r} is in ångström but no pixel size is known{where}: give --pixel-size")
    return value / px


def write_mrc(path: str | Path, data: np.ndarray, pixel_size: float | None = None) -> None:
    """Write a 2-D array as an MRC file atomically (for heatmaps and test data)."""
    import mrcfile

    with atomic_write(path, suffix=".mrc") as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(data))
            if pixel_size:
                mrc.voxel_size = pixel_size
