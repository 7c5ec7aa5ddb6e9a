"""Helpers for the campaign tests: a tiny model, bad micrographs of every kind, a carbon edge."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

# bad file name -> a phrase its failure reason must contain
BAD_REASONS = {
    "truncated.mrc": "not a readable MRC file",
    "corrupt.mrc": "not a readable MRC file",
    "empty.mrc": "not a readable MRC file",
    "header_only.mrc": "no image data",
    "wrong_mode.mrc": "Unrecognised mode",
    "complex.mrc": "complex values",
    "all_zero.mrc": "constant",
    "nan_filled.mrc": "NaN",
    "tiny.mrc": "smaller than the particle",
}


def train_tiny_model(sim_data: Path, out: Path) -> Path:
    """A width-8 picker trained for 30 steps on the simulated set (a few seconds on 2 cores)."""
    from cryopick.cli.__main__ import main

    mics = sorted(str(p) for p in (sim_data / "micrographs").glob("*.mrc"))[:2]
    rc = main(["train", "--micrographs", *mics, "--coords", str(sim_data / "coords"), "--diameter", "24",
               "--out", str(out), "--width", "8", "--steps", "30", "--val-every", "30", "--batch-size", "4",
               "--patch-size", "64", "--threads", "1", "--seed", "0", "--quiet"])
    assert rc == 0
    return out


def write_bad_micrographs(folder: Path, template: Path) -> dict[str, str]:
    """One file per kind of bad micrograph in ``folder``; returns name -> expected reason phrase.

    ``template``: a good MRC whose bytes are cut to make the truncated file.
    """
    import mrcfile

    folder.mkdir(parents=True, exist_ok=True)
    raw = template.read_bytes()
    (folder / "truncated.mrc").write_bytes(raw[: len(raw) // 2])
    (folder / "corrupt.mrc").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "empty.mrc").write_bytes(b"")
    with mrcfile.new(folder / "header_only.mrc", overwrite=True):
        pass
    rng = np.random.default_rng(1)
    with mrcfile.new(folder / "wrong_mode.mrc", overwrite=True) as m:
        m.set_data(rng.random((64, 64), dtype=np.float32))
    patched = bytearray((folder / "wrong_mode.mrc").read_bytes())
    patched[12:16] = (3).to_bytes(4, "little")  # mode 3 (complex int16): not readable
    (folder / "wrong_mode.mrc").write_bytes(bytes(patched))
    with mrcfile.new(folder / "complex.mrc", overwrite=True) as m:  # mode 4: a Fourier transform
        m.set_data((rng.random((64, 64)) + 1j * rng.random((64, 64))).astype(np.complex64))
    with mrcfile.new(folder / "all_zero.mrc", overwrite=True) as m:
        m.set_data(np.zeros((128, 128), np.float32))
    with mrcfile.new(folder / "nan_filled.mrc", overwrite=True) as m:
        m.set_data(np.full((128, 128), np.nan, np.float32))
    with mrcfile.new(folder / "tiny.mrc", overwrite=True) as m:  # 20 px, the particle is 24 px
        m.set_data(rng.random((20, 20), dtype=np.float32))
    return dict(BAD_REASONS)


def copies(template: Path, folder: Path, n: int, prefix: str = "mic") -> list[Path]:
    """``n`` copies of one micrograph: every pick file of a campaign over them must be identical."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{prefix}_{i:03d}.mrc"
        shutil.copyfile(template, p)
        out.append(p)
    return out


def carbon_edge(size: int = 512, edge: int = 340, seed: int = 5) -> tuple[np.ndarray, np.ndarray, int]:
    """A simulated micrograph whose columns >= ``edge`` are carbon: darker, with damped contrast.

    Returns:
        image: (size, size) float32; xy: (N, 2) true particle centres; edge column.
    """
    from cryopick.simulate import SimSpec, simulate_micrograph

    image, xy = simulate_micrograph(SimSpec(size=size, particles=150, seed=1), seed)
    carbon = image.copy()
    carbon[:, edge:] = 100.0 + (image[:, edge:] - 100.0) * 0.5 - 40.0
    return carbon.astype(np.float32), xy, edge
