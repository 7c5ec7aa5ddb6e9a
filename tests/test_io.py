"""Micrograph reading (every MRC mode, stacks, TIFF), coordinate round trips, manifests."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile
import tifffile

from cryopick.errors import CryopickError
from cryopick.io.coords import FORMATS, check_inside, find_coords_file, read_coords, write_coords
from cryopick.io.manifest import resolve_micrographs
from cryopick.io.micrograph import read_micrograph, write_mrc

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8, np.uint8, np.int16])
def test_mrc_modes_read_as_float32_with_pixel_size(tmp_path: Path, dtype: type) -> None:
    data = (RNG.integers(0, 100, size=(40, 48))).astype(dtype)
    path = tmp_path / "m.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 1.34
    m = read_micrograph(path)
    assert m.data.dtype == np.float32 and m.shape == (40, 48)
    np.testing.assert_array_equal(m.data, data.astype(np.float32))
    assert m.pixel_size == pytest.approx(1.34, rel=1e-5)
    assert read_micrograph(path, pixel_size=2.0).pixel_size == 2.0  # the flag wins over the header


def test_one_frame_stack_and_tiff(tmp_path: Path) -> None:
    data = RNG.normal(size=(1, 32, 36)).astype(np.float32)
    with mrcfile.new(tmp_path / "s.mrcs") as mrc:
        mrc.set_data(data)
    np.testing.assert_array_equal(read_micrograph(tmp_path / "s.mrcs").data, data[0])
    tifffile.imwrite(tmp_path / "t.tif", data[0])
    m = read_micrograph(tmp_path / "t.tif")
    np.testing.assert_array_equal(m.data, data[0])
    assert m.pixel_size is None


def test_write_mrc_round_trip(tmp_path: Path) -> None:
    data = RNG.normal(size=(30, 50)).astype(np.float32)
    write_mrc(tmp_path / "h.mrc", data, pixel_size=3.5)
    m = read_micrograph(tmp_path / "h.mrc")
    np.testing.assert_array_equal(m.data, data)
    assert m.pixel_size == pytest.approx(3.5)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such micrograph file"),
        (lambda p: p.write_bytes(b"this is not an MRC file" * 100), "not a readable MRC file"),
        (lambda p: _truncated(p), "not a readable MRC file"),
        (lambda p: _mrc(p, np.full((32, 32), np.nan, np.float32)), "NaN"),
        (lambda p: _mrc(p, np.zeros((32, 32), np.float32)), "constant"),
        (lambda p: _mrc(p, np.ones((3, 32, 32), np.float32)), "2-D"),
        (lambda p: _mrc(p, RNG.normal(size=(8, 8)).astype(np.float32)), "only 8x8"),
    ],
    ids=["missing", "not-mrc", "truncated", "nan", "constant", "3d-stack", "tiny"],
)
def test_bad_micrographs_raise_naming_the_file(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "bad.mrc"
    make(path)
    with pytest.raises(CryopickError, match=message) as info:
        read_micrograph(path)
    assert str(path) in str(info.value)


def _mrc(path: Path, data: np.ndarray) -> None:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)


def _truncated(path: Path) -> None:
    _mrc(path, RNG.normal(size=(64, 64)).astype(np.float32))
    path.write_bytes(path.read_bytes()[:2000])


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_coordinate_round_trip(tmp_path: Path, fmt: str) -> None:
    xy = RNG.uniform(20, 900, size=(57, 2)).round(2)
    scores = RNG.uniform(0, 1, size=57).round(5)
    path = write_coords(tmp_path / f"mic{FORMATS[fmt].suffix}", xy, scores, fmt, box_size=40)
    back_xy, back_scores = read_coords(path)
    np.testing.assert_allclose(back_xy, xy, atol=1e-2)
    np.testing.assert_allclose(back_scores, scores, atol=1e-5)


def test_box_uses_corner_convention(tmp_path: Path) -> None:
    write_coords(tmp_path / "a.box", np.array([[100.0, 200.0]]), box_size=64)
    first = (tmp_path / "a.box").read_text().split()
    assert float(first[0]) == 68.0 and float(first[1]) == 168.0 and float(first[2]) == 64


def test_star_is_relion_readable(tmp_path: Path) -> None:
    write_coords(tmp_path / "a.star", np.array([[1.5, 2.5], [3.0, 4.0]]), np.array([0.9, 0.8]))
    df = starfile.read(tmp_path / "a.star")
    assert list(df.columns[:2]) == ["rlnCoordinateX", "rlnCoordinateY"]
    assert df["rlnCoordinateX"].tolist() == [1.5, 3.0]


def test_empty_coordinate_round_trip(tmp_path: Path) -> None:
    for fmt in FORMATS:
        xy, scores = read_coords(write_coords(tmp_path / f"e{FORMATS[fmt].suffix}", np.zeros((0, 2)), fmt=fmt, box_size=10))
        assert xy.shape == (0, 2) and scores.shape == (0,)


def test_find_coords_by_stem_and_bad_coords(tmp_path: Path) -> None:
    write_coords(tmp_path / "mic_01.csv", np.array([[5.0, 5.0]]))
    assert find_coords_file(tmp_path, "mic_01") == tmp_path / "mic_01.csv"
    assert find_coords_file(tmp_path, "mic_02") is None
    with pytest.raises(CryopickError, match="outside the 100x50 micrograph") as info:
        check_inside(np.array([[10.0, 10.0], [120.0, 10.0]]), (50, 100), tmp_path / "x.star")
    assert "x.star" in str(info.value)
    (tmp_path / "bad.box").write_text("1 2 three 4\n")
    with pytest.raises(CryopickError, match="bad.box"):
        read_coords(tmp_path / "bad.box")


def test_manifests_globs_and_relion_star(tmp_path: Path) -> None:
    for i in range(3):
        _mrc(tmp_path / f"m{i}.mrc", RNG.normal(size=(20, 20)).astype(np.float32))
    expected = [tmp_path / f"m{i}.mrc" for i in range(3)]
    assert resolve_micrographs([str(tmp_path / "*.mrc")]) == expected
    assert resolve_micrographs([tmp_path]) == expected
    (tmp_path / "list.txt").write_text("# micrographs\nm0.mrc\nm2.mrc\n")
    assert resolve_micrographs([tmp_path / "list.txt"]) == [expected[0], expected[2]]
    starfile.write(
        {"optics": _optics(), "micrographs": _mic_table(["m1.mrc", "m2.mrc"])},
        tmp_path / "micrographs_ctf.star",
    )
    assert resolve_micrographs([tmp_path / "micrographs_ctf.star"]) == expected[1:]
    with pytest.raises(CryopickError, match="matches no file"):
        resolve_micrographs([str(tmp_path / "*.tif")])
    (tmp_path / "missing.txt").write_text("nope.mrc\n")
    with pytest.raises(CryopickError, match="nope.mrc"):
        resolve_micrographs([tmp_path / "missing.txt"])


def _optics():
    import pandas as pd

    return pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1], "rlnMicrographPixelSize": [1.0]})


def _mic_table(names: list[str]):
    import pandas as pd

    return pd.DataFrame({"rlnMicrographName": names, "rlnOpticsGroup": [1] * len(names)})
