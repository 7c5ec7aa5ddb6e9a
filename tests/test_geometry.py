"""Binning and patch edge follow the particle; diameters in ångström; detector-sized simulations."""

from __future__ import annotations

import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from cryopick.cli.__main__ import main
from cryopick.config import PreprocessConfig, TrainConfig
from cryopick.errors import CryopickError
from cryopick.inference.picker import load_picker
from cryopick.io.coords import read_coords
from cryopick.io.micrograph import diameter_in_pixels, write_mrc
from cryopick.preprocessing.binning import bin_factor, binned_diameter, resolve_binning
from cryopick.simulate import SimSpec, parse_size, simulate_micrograph
from cryopick.training.patches import patch_size_for, resolve_geometry
from conftest import mic_paths


def test_default_binning_brings_every_particle_to_the_target_size() -> None:
    pre = PreprocessConfig()
    assert pre.bin is None
    for diameter in (27.0, 56.0, 180.0, 250.0):
        resolved = resolve_binning(pre, diameter)
        assert binned_diameter(resolved, diameter, None) == pytest.approx(pre.target_diameter, rel=1e-3)
    assert resolve_binning(pre, 8.0).bin == 1.0  # small particles are never upsampled
    assert resolve_binning(PreprocessConfig(bin=3.0), 56.0).bin == 3.0  # an explicit factor is kept
    by_pixel = resolve_binning(PreprocessConfig(target_pixel_size=10.0), 56.0)
    assert by_pixel.bin is None and bin_factor(by_pixel, 5.0) == 2.0
    with pytest.raises(CryopickError, match="not resolved"):
        bin_factor(pre, None)


def test_patch_edge_follows_the_particle() -> None:
    assert patch_size_for(20.0) == 144  # the default binned diameter: about 7 particles across
    sizes = [patch_size_for(d) for d in (4.0, 10.0, 14.0, 20.0, 30.0, 80.0)]
    assert sizes == sorted(sizes) and sizes[0] == 64 and sizes[-1] == 256
    assert all(s % 16 == 0 for s in sizes)
    pre, train = resolve_geometry(PreprocessConfig(bin=2.0), TrainConfig(), 56.0, None)
    assert train.patch_size == patch_size_for(28.0) == 192  # a user's --bin 2 on a 56-px particle: larger patches
    _, explicit = resolve_geometry(PreprocessConfig(), TrainConfig(patch_size=64), 56.0, None)
    assert explicit.patch_size == 64


def test_diameter_in_angstrom_uses_the_header_or_the_given_pixel_size(tmp_path: Path) -> None:
    mic = tmp_path / "m.mrc"
    write_mrc(mic, np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32), pixel_size=2.5)
    assert diameter_in_pixels("150A", micrograph=mic) == pytest.approx(60.0)
    assert diameter_in_pixels("150 Å", 3.0, mic) == pytest.approx(50.0)  # --pixel-size wins over the header
    assert diameter_in_pixels("42px") == diameter_in_pixels("42") == 42.0
    with mrcfile.open(mic, "r+") as m:
        m.voxel_size = 0.0
    with pytest.raises(CryopickError, match="no pixel size is known.*m.mrc"):
        diameter_in_pixels("150A", micrograph=mic)
    for bad in ("12nm", "abc", "0"):
        with pytest.raises(CryopickError, match="diameter"):
            diameter_in_pixels(bad)


def test_train_cli_resolves_and_stores_binning_from_a_diameter_in_angstrom(sim_data: Path, tmp_path: Path) -> None:
    """Simulated particles are 24 px at 4 Å/px: ``--diameter 96A`` is 24 px, binned to the 20-px target."""
    run = tmp_path / "run"
    mics = mic_paths(sim_data, ["sim_0000"])
    assert main(["train", "--micrographs", *map(str, mics), "--coords", str(sim_data / "coords"), "--diameter", "96A",
                 "--out", str(run), "--width", "4", "--steps", "2", "--val-every", "2", "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["diameter"] == pytest.approx(24.0)
    assert config["preprocess"]["bin"] == pytest.approx(24.0 / 20.0, abs=1e-3)
    assert config["train"]["patch_size"] == 144
    _, meta = load_picker(run)
    assert meta.preprocess.bin == config["preprocess"]["bin"]  # picking bins as training did


def test_detector_sized_simulation_is_not_square_and_keeps_particles_inside() -> None:
    assert parse_size("k3") == (5760, 4092) and parse_size("4096") == (4096, 4096) and parse_size("300x200") == (300, 200)
    with pytest.raises(ValueError, match="WxH"):
        parse_size("12x3")
    image, xy = simulate_micrograph(SimSpec(size=600, height=400, diameter=40.0, particles=30), seed=3)
    assert image.shape == (400, 600) and len(xy) == 30
    assert (xy[:, 0] >= 20).all() and (xy[:, 0] <= 580).all() and (xy[:, 1] >= 20).all() and (xy[:, 1] <= 380).all()
    # particles are darker than the ice around them
    inside = [image[int(y), int(x)] for x, y in xy]
    assert np.mean(inside) < np.median(image)


def test_simulate_cli_writes_a_k3_shaped_micrograph(tmp_path: Path) -> None:
    assert main(["simulate", "--out", str(tmp_path), "--size", "768x512", "-n", "1", "--diameter", "60", "--particles", "12"]) == 0
    data = mrcfile.read(tmp_path / "micrographs" / "sim_0000.mrc")
    assert data.shape == (512, 768)
    xy, _ = read_coords(tmp_path / "coords" / "sim_0000.star")
    assert len(xy) == 12 and xy[:, 0].max() > 512  # x runs along the longer edge
    assert main(["simulate", "--out", str(tmp_path / "bad"), "--size", "k9"]) == 2


def test_campaign_config_resolves_binning_and_patch_from_the_diameter(tmp_path: Path) -> None:
    from cryopick.selftrain.config import load_config

    cfg = load_config(None, {"out": str(tmp_path), "data.diameter": 56.0})
    assert cfg.preprocess.bin == 2.8 and cfg.train.patch_size == 144
    shipped = Path(__file__).resolve().parents[1] / "pipelines" / "configs" / "tiny_cpu.yaml"
    tiny = load_config(shipped, {"out": str(tmp_path), "data.diameter": 56.0})
    assert tiny.preprocess.bin == 2.0 and tiny.train.patch_size == 64  # explicit settings are kept


def test_a_resumed_campaign_keeps_the_binning_it_started_with(tmp_path: Path) -> None:
    """A campaign begun with bin 2 and 128-px patches (the defaults before binning followed the particle) resumes
    with them when the rerun leaves both unset."""
    from cryopick.selftrain.config import load_config

    (tmp_path / "campaign.json").write_text(json.dumps({"preprocess": {"bin": 2.0}, "train": {"patch_size": 128}}))
    cfg = load_config(None, {"out": str(tmp_path), "data.diameter": 56.0})
    assert cfg.preprocess.bin == 2.0 and cfg.train.patch_size == 128
    fresh = load_config(None, {"out": str(tmp_path / "new"), "data.diameter": 56.0})
    assert fresh.preprocess.bin == 2.8 and fresh.train.patch_size == 144
