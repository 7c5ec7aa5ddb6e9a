"""Topaz (``topaz-em``) as a baseline particle picker, run in its own virtual environment.

Self-contained on purpose: stdlib + numpy only, never imports cryopick, so the cryopick
benchmarks can run Topaz side by side without sharing dependencies.

Environment notes (found out on Python 3.11, CPU only):

* ``topaz-em==0.3.20`` installs and runs with ``torch==2.13.0`` (the local ``+cpu`` wheel),
  ``numpy`` 2.x and ``pandas`` 3.x; no numpy/pandas pins were needed.
* topaz-em requires ``torchvision`` (train-time augmentation: ``rotate``/``hflip``/``vflip``).
  The only torchvision matching torch 2.13 that pip can get here is PyPI's ``0.28.0``, whose C
  extension is linked against CUDA torch and fails to load on the CPU build; torchvision is
  meant to work without it, but ``_meta_registrations.py`` registers fake kernels for
  ``torchvision::nms``/``qnms`` unguarded, so ``import torchvision`` (and hence every
  ``topaz`` command) dies with "operator torchvision::nms does not exist". We install a tiny
  ``.pth`` hook in the venv that defines those two op schemas (no kernels) just before that
  module is imported; nothing Topaz uses touches them.
* Topaz writes ``x_coord`` = column, ``y_coord`` = row, integer pixels of the image it scored
  (the preprocessed one); ``extract -x SCALE`` maps them back to the original frame.
* topaz 0.3.20 ``stats.pixels_given_radius`` counts a 3-D ball's worth of pixels even for 2-D
  (``-r 3``: 203 instead of 29), so ``train -n 600`` sets pi ~7x too high (0.116 here). Left
  as is: the baseline is Topaz as a user gets it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TOPAZ_VERSION = "0.3.20"
TORCH_PIN = "torch==2.13.0"  # resolves to /opt/wheels/torch-2.13.0+cpu-... via /etc/xdg/pip
TORCHVISION_PIN = "torchvision==0.28.0"  # the release built for torch 2.13
DEFAULT_VENV = Path.home() / ".cache" / "cryopick" / "topaz-venv"
DEFAULT_DATA = Path("/work/shared/data/empiar10017")

_TV_FIX = '''"""Let PyPI's CUDA-built torchvision import on CPU-only torch (written by cryopick)."""
import importlib.abc
import sys


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision._meta_registrations":
            return None
        sys.meta_path.remove(self)
        import torch
        import torchvision.extension as ext
        if not ext._has_ops():
            lib = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                lib.define(op + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            sys.modules[__name__]._lib = lib
        return None


sys.meta_path.insert(0, _Finder())
'''

# Runs a command and writes the peak RSS (KiB) of its process tree to argv[1].
_RUSAGE_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(rc)\n"
)


def _topaz_ok(topaz_exe: Path) -> bool:
    """True if ``topaz --version`` runs (this imports torch and torchvision) and matches."""
    if not topaz_exe.exists():
        return False
    res = subprocess.run([str(topaz_exe), "--version"], check=False, capture_output=True,
                         text=True)
    return res.returncode == 0 and res.stdout.strip() == TOPAZ_VERSION


def ensure_topaz_venv(venv_dir: Path = DEFAULT_VENV) -> Path:
    """Create ``venv_dir`` with topaz-em on CPU torch if needed; return the ``topaz`` executable.

    Installs ``torch==2.13.0`` first (the local CPU wheel), refusing to go on if pip would fetch
    torch from anywhere but a local file, then ``topaz-em``/``torchvision`` with torch pinned in
    the same command so the resolver can never swap in a (multi-GB, CUDA) torch. Idempotent.
    """
    venv_dir = Path(venv_dir).expanduser()
    topaz_exe, python = venv_dir / "bin" / "topaz", venv_dir / "bin" / "python"
    if _topaz_ok(topaz_exe):
        return topaz_exe
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv_dir)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    report = venv_dir / "torch-resolve.json"
    subprocess.run([*pip, "--dry-run", "--ignore-installed", "--no-deps", "--report",
                    str(report), TORCH_PIN], check=True)
    url = json.loads(report.read_text())["install"][0]["download_info"]["url"]
    if not url.startswith("file:"):
        raise RuntimeError(f"{TORCH_PIN} would be downloaded from {url}; refusing (want the "
                           "local CPU wheel, see /etc/xdg/pip)")
    subprocess.run([*pip, TORCH_PIN], check=True)
    subprocess.run([*pip, TORCH_PIN, TORCHVISION_PIN, f"topaz-em=={TOPAZ_VERSION}"], check=True)
    get_site = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = subprocess.run([str(python), "-c", get_site], check=True, capture_output=True,
                             text=True)
    site = Path(purelib.stdout.strip())
    (site / "_cryopick_tv_fix.py").write_text(_TV_FIX)
    (site / "_cryopick_tv_fix.pth").write_text("import _cryopick_tv_fix\n")
    if not _topaz_ok(topaz_exe):
        raise RuntimeError(f"topaz in {venv_dir} does not run; see `{topaz_exe} --version`")
    return topaz_exe


def _run_measured(cmd: list[str], log: Path) -> tuple[float, int]:
    """Run ``cmd`` (output appended to ``log``); return (wall seconds, peak RSS in bytes)."""
    rss_file = log.with_suffix(".maxrss")
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, "-c", _RUSAGE_WRAPPER, str(rss_file), *cmd],
                             stdout=fh, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"command failed ({rc}), see {log}: {' '.join(cmd)}")
    return seconds, int(rss_file.read_text()) * 1024  # ru_maxrss is KiB on Linux


def _preprocess(topaz_exe: Path, micrographs: list[Path], dest: Path, scale: int,
                log: Path) -> tuple[list[Path], float, int]:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [str(topaz_exe), "preprocess", "-s", str(scale), "-o", str(dest),
           *map(str, micrographs)]
    seconds, rss = _run_measured(cmd, log)
    return [dest / (Path(m).stem + ".mrc") for m in micrographs], seconds, rss


def run_topaz(topaz_exe: Path, micrographs: list[Path], out_dir: Path, *,
              model: str | None = None, radius: int = 13, threshold: float = -6.0,
              scale: int = 1) -> dict[str, Any]:
    """Pick ``micrographs`` with Topaz; write ``out_dir/NAME.csv`` (``x,y,score``) and time it.

    Runs ``topaz preprocess -s SCALE`` then ``topaz extract -r RADIUS -t THRESHOLD -d -1
    -x SCALE [-m MODEL]`` with Topaz's default threads on CPU. ``model=None`` uses Topaz's
    pretrained default (resnet16 = resnet16_u64); otherwise a pretrained name or a ``.sav``
    path. ``radius`` is in preprocessed pixels; output coordinates are in the original frame
    (x = column, y = row). Returns seconds and peak RSS (max over the child process tree)
    for each step, and extract seconds per micrograph.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "topaz.log"
    log.write_text("")
    pre, pre_s, pre_rss = _preprocess(topaz_exe, micrographs, out_dir / "preprocessed", scale,
                                      log)
    raw = out_dir / "topaz_picks.txt"
    cmd = [str(topaz_exe), "extract", "-r", str(radius), "-t", str(threshold), "-d", "-1",
           "-x", str(scale), "-o", str(raw)]
    if model is not None:
        cmd += ["-m", str(model)]
    ext_s, ext_rss = _run_measured(cmd + [str(p) for p in pre], log)
    rows: dict[str, list[str]] = {Path(m).stem: [] for m in micrographs}
    with open(raw) as fh:
        header = fh.readline().rstrip("\n").split("\t")
        i_name, i_x, i_y, i_s = (header.index(c) for c in
                                 ("image_name", "x_coord", "y_coord", "score"))
        for line in fh:
            f = line.rstrip("\n").split("\t")
            rows[f[i_name]].append(f"{f[i_x]},{f[i_y]},{f[i_s]}")
    for name, lines in rows.items():
        (out_dir / f"{name}.csv").write_text("\n".join(["x,y,score", *lines]) + "\n")
    n = len(micrographs)
    return {"model": model or "resnet16 (pretrained default)", "n_micrographs": n,
            "n_picks": sum(map(len, rows.values())), "preprocess_s": pre_s,
            "preprocess_peak_rss_gb": pre_rss / 1e9, "extract_s": ext_s,
            "extract_s_per_micrograph": ext_s / n, "extract_peak_rss_gb": ext_rss / 1e9,
            "loadavg_1m_after": os.getloadavg()[0],  # >~2 on 2 cores: timings were contended
            "extract_cmd": " ".join(cmd) + " PREPROCESSED.mrc ..."}


def train_topaz(topaz_exe: Path, train_micrographs: list[Path], coords_dir: Path,
                work_dir: Path, *, n: int = 600, num_epochs: int = 2, epoch_size: int = 200,
                radius: int = 3) -> tuple[Path, float]:
    """Train a Topaz model on the expert picks (``coords_dir/NAME.csv``) of the micrographs.

    Preprocesses with ``-s 1`` (so coordinates need no rescaling), writes the picks as Topaz
    coordinates (tab-separated ``image_name x_coord y_coord``, rounded to pixels), runs
    ``topaz train -n N --num-epochs E --epoch-size S -r RADIUS -d -1`` (``radius`` = Topaz's
    default 3 px positive region; all else Topaz defaults: resnet8_u32 initialised from the
    pretrained weights, GE-binomial). Returns the last epoch's model and the train seconds.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / "topaz.log"
    log.write_text("")
    pre_dir = work_dir / "preprocessed"
    _preprocess(topaz_exe, train_micrographs, pre_dir, 1, log)
    targets = work_dir / "train_targets.txt"
    lines = ["image_name\tx_coord\ty_coord"]
    for m in train_micrographs:
        xy = np.loadtxt(Path(coords_dir) / f"{Path(m).stem}.csv", delimiter=",", skiprows=1,
                        usecols=(0, 1), ndmin=2)
        lines += [f"{Path(m).stem}\t{x}\t{y}" for x, y in np.rint(xy).astype(int)]
    targets.write_text("\n".join(lines) + "\n")
    prefix = work_dir / "model"
    cmd = [str(topaz_exe), "train", "-n", str(n), "--num-epochs", str(num_epochs),
           "--epoch-size", str(epoch_size), "-r", str(radius), "-d", "-1",
           "--train-images", str(pre_dir), "--train-targets", str(targets),
           "--save-prefix", str(prefix), "-o", str(work_dir / "train_curve.txt")]
    seconds, _ = _run_measured(cmd, log)
    models = sorted(work_dir.glob("model_epoch*.sav"),
                    key=lambda p: int(p.stem.rsplit("epoch", 1)[1]))
    if not models:
        raise RuntimeError(f"topaz train saved no model, see {log}")
    return models[-1], seconds


def sanity_best_f1(picks_dir: Path, coords_dir: Path, names: list[str],
                   match_radius: float = 13.5) -> dict[str, float]:
    """SANITY CHECK ONLY -- the real benchmark scores with cryopick's own metrics.

    Greedy one-to-one matching: picks in descending score order each take the nearest still
    unmatched expert pick within ``match_radius`` px. Thresholds cut this same ranking, so
    pooled precision/recall over ``names`` at every score threshold come from one pass;
    returns the best F1 and its threshold, precision and recall.
    """
    scores, hits, n_true = [], [], 0
    for name in names:
        truth = np.loadtxt(Path(coords_dir) / f"{name}.csv", delimiter=",", skiprows=1,
                           usecols=(0, 1), ndmin=2)
        pred = np.loadtxt(Path(picks_dir) / f"{name}.csv", delimiter=",", skiprows=1, ndmin=2)
        n_true += len(truth)
        if pred.size == 0:
            continue
        pred = pred[np.argsort(-pred[:, 2], kind="stable")]
        free = np.ones(len(truth), dtype=bool)
        for x, y, s in pred:
            d = np.hypot(truth[:, 0] - x, truth[:, 1] - y)
            d[~free] = np.inf
            j = int(np.argmin(d)) if len(d) else -1
            hit = j >= 0 and d[j] <= match_radius
            if hit:
                free[j] = False
            scores.append(s)
            hits.append(hit)
    if not scores:
        return {"f1": 0.0, "precision": 0.0, "recall": 0.0, "threshold": float("nan")}
    order = np.argsort(-np.asarray(scores), kind="stable")
    s, tp = np.asarray(scores)[order], np.cumsum(np.asarray(hits)[order])
    last = np.r_[s[1:] != s[:-1], True]  # only cut between distinct scores
    k = np.arange(1, len(s) + 1)
    prec, rec = tp / k, tp / max(n_true, 1)
    f1 = np.where(last, 2 * prec * rec / np.maximum(prec + rec, 1e-12), -1.0)
    b = int(np.argmax(f1))
    return {"f1": float(f1[b]), "precision": float(prec[b]), "recall": float(rec[b]),
            "threshold": float(s[b])}


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Train on ``labeled``, pick ``test`` with the pretrained and the trained model, report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parent / "out" / "topaz")
    args = ap.parse_args(argv)
    args.out = args.out.resolve()
    split = json.loads((args.data / "split.json").read_text())
    mics = {k: [args.data / "micrographs" / f"{n}.mrc" for n in v] for k, v in split.items()}
    coords = args.data / "coords"
    topaz = ensure_topaz_venv(args.venv)
    model, train_s = train_topaz(topaz, mics["labeled"], coords, args.out / "train")
    summary: dict[str, object] = {"topaz_version": TOPAZ_VERSION, "train_s": train_s,
                                  "train_loadavg_1m_after": os.getloadavg()[0],
                                  "trained_model": str(model)}
    for key, m in (("pretrained_resnet16", None), ("trained_5_labeled", str(model))):
        res = run_topaz(topaz, mics["test"], args.out / key, model=m)
        res["sanity_best_f1"] = sanity_best_f1(args.out / key, coords, split["test"])
        summary[key] = res
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
