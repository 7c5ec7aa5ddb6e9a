"""Property-based tests of the readers and writers: random valid files round-trip, random corrupt files
give :class:`CryopickError` (one line for the user), never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cryopick.errors import CryopickError
from cryopick.io.coords import FORMATS, read_coords, write_coords
from cryopick.io.micrograph import read_micrograph, write_mrc

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
coord = st.floats(min_value=0.0, max_value=8192.0, allow_nan=False, allow_infinity=False)
score = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@SETTINGS
@given(fmt=st.sampled_from(sorted(FORMATS)), points=st.lists(st.tuples(coord, coord, score), max_size=60),
       box=st.integers(min_value=8, max_value=512))
def test_coordinates_round_trip(fmt: str, points: list[tuple[float, float, float]], box: int) -> None:
    xy = np.array([(x, y) for x, y, _ in points], dtype=np.float64).reshape(-1, 2)
    scores = np.array([s for _, _, s in points], dtype=np.float64)
    with tempfile.TemporaryDirectory() as d:
        path = write_coords(Path(d) / f"mic{FORMATS[fmt].suffix}", xy, scores, fmt, box_size=box)
        got_xy, got_scores = read_coords(path)
    np.testing.assert_allclose(got_xy, xy, atol=0.006)  # the writers keep 2-3 decimals
    if fmt != "box" or len(xy):
        np.testing.assert_allclose(got_scores, scores, atol=1e-6)


@SETTINGS
@given(fmt=st.sampled_from(sorted(FORMATS)), blob=st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_corrupt_coordinate_files_give_cryopick_errors(fmt: str, blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"mic{FORMATS[fmt].suffix}"
        path.write_bytes(blob)
        try:
            xy, scores = read_coords(path)
        except CryopickError as exc:
            assert str(path) in str(exc)  # names the file
        else:  # whatever parsed is well formed
            assert xy.shape == (len(scores), 2) and np.isfinite(xy).all() and np.isfinite(scores).all()


@SETTINGS
@given(image=arrays(np.float32, st.tuples(st.integers(16, 64), st.integers(16, 64)),
                    elements=st.floats(-1e3, 1e3, width=32, allow_nan=False)),
       pixel=st.one_of(st.none(), st.floats(0.3, 10.0)))
def test_mrc_round_trip(image: np.ndarray, pixel: float | None) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.mrc"
        write_mrc(path, image, pixel)
        try:
            m = read_micrograph(path)
        except CryopickError as exc:  # only a constant image is refused
            assert float(image.max()) == float(image.min()) and "constant" in str(exc)
            return
    np.testing.assert_array_equal(m.data, image)
    assert m.shape == image.shape
    if pixel is not None:
        assert m.pixel_size == pytest.approx(pixel, rel=1e-5)


def _damaged_reads_cleanly(good: Path, bad: Path, cut: int, junk: bytes, offset: int) -> None:
    """``good`` scribbled over at ``offset`` and cut at ``cut`` bytes: read as a 2-D finite image, or a CryopickError naming it."""
    raw = bytearray(good.read_bytes())
    raw[offset:offset + len(junk)] = junk
    bad.write_bytes(bytes(raw[:cut]))
    try:
        m = read_micrograph(bad)
    except CryopickError as exc:
        assert str(bad) in str(exc)
    else:
        assert m.data.ndim == 2 and np.isfinite(m.data).all()


@SETTINGS
@given(cut=st.integers(0, 4000), junk=st.binary(max_size=64), offset=st.integers(0, 1100))
@example(cut=1024, junk=b"\x00\x00\x00\x7f\x00\x00\x00A", offset=0)  # a header declaring ~2e9 x 1e9 values
@example(cut=1024, junk=b"\x00\x00\x00\x0c", offset=0)  # ~2e8 columns: gigabytes, had they been allocated
def test_corrupt_mrc_files_give_cryopick_errors(cut: int, junk: bytes, offset: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        good = Path(d) / "good.mrc"
        write_mrc(good, np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32), 1.0)
        _damaged_reads_cleanly(good, Path(d) / "bad.mrc", cut, junk, offset)


@SETTINGS
@given(image=arrays(np.float32, st.tuples(st.integers(16, 48), st.integers(16, 48)),
                    elements=st.floats(-1e3, 1e3, width=32, allow_nan=False)),
       cut=st.integers(0, 10_000), junk=st.binary(max_size=32), offset=st.integers(0, 300))
def test_tiff_round_trip_and_corrupt_tiffs(image: np.ndarray, cut: int, junk: bytes, offset: int) -> None:
    import tifffile

    with tempfile.TemporaryDirectory() as d:
        good = Path(d) / "m.tif"
        tifffile.imwrite(good, image)
        if float(image.max()) != float(image.min()):
            np.testing.assert_array_equal(read_micrograph(good).data, image)
        _damaged_reads_cleanly(good, Path(d) / "bad.tif", cut, junk, offset)
