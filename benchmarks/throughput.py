"""Issue #5 throughput benchmark: picking and training speed, peak memory, share of the machine's limit.

Every figure comes from a fresh child process (``--job``), so each configuration's peak memory is
that process's own ``ru_maxrss`` (read with ``os.wait4``: the whole process, Python and torch
libraries included; the RSS right after ``import torch`` is reported beside it).

* picking, end to end as ``cryopick pick`` does it: read MRC -> Fourier-crop + normalise ->
  tiled heatmap -> peaks -> ``.star`` file, default pick settings (bin 2, tile 512, tile batch 4, 4 test-time-augmentation views),
  for a real 1024² EMPIAR-10017 test micrograph and a 4096² one made with ``cryopick.simulate``;
  the first micrograph of a process (cold: oneDNN primitive creation) and the next ones (warm);
* training: patches/s (128², batch 16, AdamW, masked BCE) on EMPIAR-10017 ``labeled`` patches,
  one process, and with 1 and 2 Ray Train workers (``cryopick.distributed.train_loop.fit``);
* the limit: FLOPs per pixel of each width (``torch.utils.flop_counter``) x pixels the network
  actually sees (tile overlap included) / seconds, against a plain large conv2d timed here.

    python benchmarks/throughput.py                      # full run (minutes on 2 cores)
    python benchmarks/throughput.py --quick --no-doc     # seconds: checks the script
    python benchmarks/throughput.py --device cuda        # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before any torch import (see cryopick.runtime)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, update_section  # noqa: E402
from _throughput_report import render  # noqa: E402

DATA = Path(os.environ.get("CRYOPICK_DATA_ROOT", REPO.parent / "shared" / "data")) / "empiar10017"  # as label_efficiency.py
OUT = REPO / "benchmarks" / "out" / "throughput"
DIAMETER = 27.0
TILE = 512  # PickConfig default; FLOPs are counted per pixel on a tile of this size


# ----------------------------------------------------------------------------- child jobs
def _rss_now_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def job_conv(a: dict[str, Any]) -> dict[str, Any]:
    """Best-of-N GFLOP/s of a 64->64 3x3 conv on 1x64xSxS (channels-last, inference mode)."""
    import torch
    import torch.nn.functional as F

    dev, s = torch.device(a["device"]), a["conv_size"]
    x = torch.randn(1, 64, s, s, device=dev).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3, device=dev).contiguous(memory_format=torch.channels_last)
    flops = 2 * 64 * 64 * 9 * s * s
    res = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16))[: 2 if a.get("bf16", True) else 1]:
        with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            F.conv2d(x, w, padding=1)
            times = []
            for _ in range(a["repeats"]):
                _sync(dev)
                t = time.perf_counter()
                F.conv2d(x, w, padding=1)
                _sync(dev)
                times.append(time.perf_counter() - t)
        res[f"gflops_{name}"] = flops / min(times) / 1e9
    return res


def job_pick(a: dict[str, Any]) -> dict[str, Any]:
    """End-to-end picking of one micrograph, ``repeats`` times, each stage timed."""
    t0 = time.perf_counter()
    import numpy as np
    import torch

    from cryopick.config import PickConfig
    from cryopick.io.coords import write_coords
    from cryopick.io.micrograph import read_micrograph
    from cryopick.inference.picker import heatmap_to_picks, load_picker
    from cryopick.inference.tiling import predict_heatmap
    from cryopick.preprocessing.binning import preprocess

    import_s, rss_import = time.perf_counter() - t0, _rss_now_mb()
    dev = torch.device(a["device"])
    t = time.perf_counter()
    model, meta = load_picker(a["model"], dev)
    load_s = time.perf_counter() - t
    cfg = PickConfig(amp=a["amp"], tta=a.get("tta", PickConfig().tta))
    threshold = meta.threshold if cfg.threshold is None else cfg.threshold
    runs = []
    for r in range(a["repeats"]):
        st: dict[str, float] = {}
        t = time.perf_counter()
        m = read_micrograph(Path(a["micrograph"]))
        st["read"] = time.perf_counter() - t
        t = time.perf_counter()
        b = preprocess(m.data, meta.preprocess, m.pixel_size)
        st["preprocess"] = time.perf_counter() - t
        t = time.perf_counter()
        hm = predict_heatmap(model, b.image, cfg, dev, compile_model=a.get("compile", False))
        _sync(dev)
        st["heatmap"] = time.perf_counter() - t
        t = time.perf_counter()
        xy, scores = heatmap_to_picks(hm, b, meta, threshold, cfg.min_distance, cfg.border)
        st["peaks"] = time.perf_counter() - t
        t = time.perf_counter()
        write_coords(Path(a["out"]) / f"picks_{r}.star", xy, scores, "star", round(meta.diameter * 1.5))
        st["write"] = time.perf_counter() - t
        st["total"] = sum(st.values())
        runs.append(st)
    h, w = b.image.shape
    from cryopick.inference.tiling import TILE_OVERLAP, TTA_TRANSFORMS, _tiles, tile_edge

    # every test-time-augmentation view runs the network over all tiles once more
    n_tiles = len(list(_tiles((h, w), (tile_edge(h, TILE), tile_edge(w, TILE)), TILE_OVERLAP))) * len(TTA_TRANSFORMS[cfg.tta])
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None
    return {"import_s": import_s, "load_s": load_s, "rss_import_mb": rss_import, "runs": runs, "gpu_peak_mb": gpu_mb,
            "shape": list(m.shape), "binned_shape": [h, w], "net_pixels": n_tiles * tile_edge(h, TILE) * tile_edge(w, TILE), "n_tiles": n_tiles,
            "n_picks": int(len(xy)), "heatmap_mean": float(np.mean(hm)), "tta": cfg.tta}


def job_train(a: dict[str, Any]) -> dict[str, Any]:
    """Single-process training steps as ``train_picker`` runs them (channels-last;
    bf16 autocast if ``amp``) on real labeled patches; patches/s after ``warmup`` steps."""
    import numpy as np
    import torch

    from cryopick.config import ModelConfig, PreprocessConfig, TrainConfig
    from cryopick.training.dataset import load_labeled, split_items
    from cryopick.model.unet import build_unet
    from cryopick.training.patches import resolve_geometry, sample_patches
    from cryopick.training.loop import WEIGHT_DECAY, train_step

    rss_import = _rss_now_mb()
    fmt = torch.channels_last
    dev = torch.device(a["device"])
    pre, tc = resolve_geometry(PreprocessConfig(), TrainConfig(), DIAMETER, None)  # binning and patch edge as `cryopick train`
    split = json.loads((DATA / "split.json").read_text())
    labeled = [load_labeled(DATA / "micrographs" / f"{n}.mrc", DATA / "coords", DIAMETER, pre) for n in split["labeled"]]
    items, _ = split_items(labeled, [], DIAMETER, tc.val_fraction)
    torch.manual_seed(0)
    model = build_unet(ModelConfig(base_width=a["width"])).to(device=dev, memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=WEIGHT_DECAY)
    rng, times = np.random.default_rng(0), []
    for _ in range(a["warmup"] + a["steps"]):
        t = time.perf_counter()
        images, masks = sample_patches(items, tc.batch_size, tc.patch_size, rng)
        x = torch.from_numpy(images).to(dev).contiguous(memory_format=fmt)
        train_step(model, opt, x, torch.from_numpy(masks).to(dev), amp=a["amp"])
        _sync(dev)
        times.append(time.perf_counter() - t)
    timed = times[a["warmup"]:]
    return {"rss_import_mb": rss_import, "step_s": statistics.median(timed), "patches_per_s": tc.batch_size * len(timed) / sum(timed),
            "batch": tc.batch_size, "patch": tc.patch_size}


def job_ray(a: dict[str, Any]) -> dict[str, Any]:
    """Ray Train (DDP, gloo) on the streamed patch Dataset: patches/s between two reports."""
    from cryopick.config import ModelConfig, PreprocessConfig, TrainConfig
    from cryopick.distributed.connect import connect, shutdown
    from cryopick.training.patches import resolve_geometry
    from cryopick.distributed.data import StageParams, build_train_dataset, training_rows
    from cryopick.distributed.train_loop import TrainSpec, fit, loop_config

    n_workers, steps, warm = a["workers"], a["steps"], a["warmup"]
    # logical CPUs beyond the 2 real ones, so the Ray Data stages can run beside the trainers
    connect(num_cpus=4, quiet=True)
    split = json.loads((DATA / "split.json").read_text())
    mics = [DATA / "micrographs" / f"{n}.mrc" for n in split["labeled"]]
    pre, tc = resolve_geometry(PreprocessConfig(), TrainConfig(steps=warm + steps, val_every=warm), DIAMETER, None)  # reports at `warm` and the end
    per_epoch = tc.batch_size * n_workers * (warm + steps) // len(mics) + tc.batch_size  # one pass feeds every step
    rows = training_rows(mics, DATA / "coords", [], per_epoch, 0, hold_back=True)
    params = StageParams(DIAMETER, {"bin": pre.bin}, tc.val_fraction, {})
    ds = build_train_dataset(rows, params, tc.patch_size)
    spec = TrainSpec(num_workers=n_workers, cpu_per_worker=2.0 / n_workers, max_failures=0,
                     storage_path=a["out"], name=f"ray_w{a['width']}_n{n_workers}")
    out = fit(ds, loop_config(tc, ModelConfig(base_width=a["width"]), params, [], None), spec)
    shutdown()
    by_step = {int(r["step"]): r["seconds"] for r in out.history}
    dt = by_step[warm + steps] - by_step[warm]
    return {"patches_per_s": tc.batch_size * n_workers * steps / dt, "seconds": dt, "steps": steps,
            "threads_per_worker": max(1, round(2.0 / n_workers))}


def job_flops(a: dict[str, Any]) -> dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from cryopick.config import ModelConfig
    from cryopick.model.unet import build_unet, count_parameters

    res = {}
    for w in a["widths"]:
        model = build_unet(ModelConfig(base_width=w)).eval()
        with FlopCounterMode(display=False) as fc, torch.inference_mode():
            model(torch.zeros(1, 1, TILE, TILE))
        res[str(w)] = {"flops_per_px": fc.get_total_flops() / TILE**2, "params": count_parameters(model)}
    return {"widths": res}


def job_ablation(a: dict[str, Any]) -> dict[str, Any]:
    """Heatmap seconds of one micrograph along the inference paths, interleaved, best of ``repeats``."""
    import torch

    from cryopick.config import PickConfig
    from cryopick.io.micrograph import read_micrograph
    from cryopick.inference.picker import load_picker
    from cryopick.inference.tiling import predict_heatmap
    from cryopick.preprocessing.binning import preprocess

    model, meta = load_picker(a["model"], torch.device(a["device"]))
    image = preprocess(read_micrograph(Path(a["micrograph"])).data, meta.preprocess).image
    paths = {"plain (NCHW, BatchNorm unfolded)": (PickConfig(), {"fuse": False, "channels_last": False}),
             "channels-last weights": (PickConfig(), {"fuse": False}),
             "+ BatchNorm folded (default)": (PickConfig(), {}),
             "+ bf16 autocast (--amp)": (PickConfig(amp=True), {})}
    if a.get("compile"):
        paths["+ torch.compile"] = (PickConfig(), {"compile_model": True})
    times: dict[str, list[float]] = {k: [] for k in paths}
    for round_ in range(a["repeats"] + 1):  # round 0 warms up (and compiles)
        for name, (cfg, kw) in paths.items():
            t = time.perf_counter()
            predict_heatmap(model, image, cfg, **kw)
            if round_:
                times[name].append(time.perf_counter() - t)
    return {"seconds": {k: min(v) for k, v in times.items()}}


JOBS = {"conv": job_conv, "pick": job_pick, "train": job_train, "ray": job_ray, "flops": job_flops, "ablation": job_ablation}


# ----------------------------------------------------------------------------- driver
def run_job(kind: str, **args: Any) -> dict[str, Any]:
    """Run one job in a fresh interpreter; add its peak RSS (MB) and the load average."""
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        proc = subprocess.Popen([sys.executable, __file__, "--job", json.dumps({"kind": kind, **args})], stdout=fo, stderr=fe, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # reap it ourselves: this child's own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0), fe.seek(0)
        out, err = fo.read(), fe.read()
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"job {kind} {args} failed ({proc.returncode}):\n{err[-3000:]}")
    res = json.loads(lines[-1][len("RESULT "):])
    res.update(peak_rss_mb=usage.ru_maxrss / 1024, load_before=load_before, load_after=os.getloadavg()[0])
    print(f"  {kind} {args.get('width', '')} {args.get('size', '')}: done, load {load_before:.1f}->{res['load_after']:.1f}", flush=True)
    return res


def make_models(widths: list[int], root: Path, bin_factor: float) -> dict[int, Path]:
    """A picker per width with untrained (seeded) weights: speed does not depend on the weights."""
    import torch

    from cryopick.config import ModelConfig, PreprocessConfig
    from cryopick.model.unet import build_unet
    from cryopick.inference.picker import PickerMeta, save_picker

    dirs = {}
    for w in widths:
        torch.manual_seed(0)
        dirs[w] = root / f"w{w}"
        meta = PickerMeta(diameter=DIAMETER, preprocess=PreprocessConfig(bin=bin_factor), model=ModelConfig(base_width=w))
        save_picker(dirs[w], build_unet(meta.model), meta)
    return dirs


def simulated(shape: tuple[int, int]) -> Path:
    """A simulated H x W micrograph (cached; a square one cropped); EMPIAR's particle size, 1/4 its density.

    A quarter of the density keeps ``cryopick.simulate``'s rejection sampling (quadratic in the
    particle count) to seconds; its 4096² ice filter alone takes minutes here, hence the cache.
    """
    path = OUT / f"sim_{shape[0]}x{shape[1]}.mrc"
    if path.exists():
        return path
    from cryopick.io.micrograph import write_mrc
    from cryopick.simulate import SimSpec, simulate_micrograph

    size = max(shape)
    image, _ = simulate_micrograph(SimSpec(size=size, diameter=DIAMETER, particles=int(600 * (size / 1024) ** 2 / 4)), seed=5)
    write_mrc(path, image[: shape[0], : shape[1]], 7.08)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--large", nargs="+", default=["2048", "4096"], help="simulated micrographs: EDGE or HxW (e.g. 3710x3838)")
    p.add_argument("--bin", type=float, default=2.0, help="Fourier-crop factor of the pickers (default: cryopick's 2)")
    p.add_argument("--repeats", type=int, default=3, help="micrographs picked per process (1st is cold)")
    p.add_argument("--large-repeats", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=6)
    p.add_argument("--ray-steps", type=int, default=6)
    p.add_argument("--ray-widths", type=int, nargs="*", default=[16, 32, 64])
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--amp", action="store_true", help="also pick with bfloat16 autocast")
    p.add_argument("--tta", type=int, nargs="+", help="test-time-augmentation views to time (default: cryopick's); "
                   "the first count is the one the targets use, the others add rows")
    p.add_argument("--compile", action="store_true", help="add torch.compile to the inference ablation (slow to compile)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny settings to check the script")
    p.add_argument("--no-doc", action="store_true")
    p.add_argument("--section", default="throughput")
    p.add_argument("--render", type=Path, help="re-render a saved results JSON (no measuring)")
    a = p.parse_args()
    if a.render:
        R = json.loads(a.render.read_text())
        sys.argv = R.get("argv", sys.argv)  # the doc names the command that measured
        body = render(R, a)
        print(body)
        if not a.no_doc:
            update_section(a.section, f"Throughput: picking, training and the machine's limit ({R['device']})", body)
        return
    if a.job:
        job = json.loads(a.job)
        print("RESULT " + json.dumps(JOBS[job.pop("kind")](job)), flush=True)
        return
    if a.quick:
        a.widths, a.large, a.repeats, a.large_repeats, a.train_steps, a.ray_steps = [16], ["1024"], 2, 1, 1, 1
        a.ray_widths = [16]
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="tp-", dir=OUT))
    test_mic = DATA / "micrographs" / f"{json.loads((DATA / 'split.json').read_text())['test'][0]}.mrc"
    shapes = [tuple(int(v) for v in s.lower().split("x")) * (1 if "x" in s.lower() else 2) for s in a.large]
    mics = [("1024²", test_mic, a.repeats)] + [(f"{h}×{w}", simulated((h, w)), a.large_repeats) for h, w in shapes]
    models = make_models(a.widths, tmp / "models", a.bin)
    R: dict[str, Any] = {"started": time.strftime("%H:%M:%S"), "device": a.device, "bin": a.bin, "argv": sys.argv,
                      "cores": os.cpu_count()}
    print("flops / conv reference", flush=True)
    R["flops"] = run_job("flops", widths=a.widths)
    R["conv"] = run_job("conv", device=a.device, conv_size=128 if a.quick else 512, repeats=3 if a.quick else 5)
    R["pick"] = []
    variants = [False, True] if a.amp else [False]
    from cryopick.config import PickConfig

    ttas = a.tta or [PickConfig().tta]
    for size, mic, reps in mics:
        for w, tta in ((w, t) for w in a.widths for t in ttas):
            for amp in variants:
                # the reference conv again right before and after (own processes, so the pick's peak RSS
                # stays its own): the share then compares like with like while other work comes and goes
                conv = [run_job("conv", device=a.device, conv_size=512, repeats=3, bf16=amp)]
                res = run_job("pick", width=w, size=size, micrograph=str(mic), model=str(models[w]), amp=amp, tta=tta,
                              device=a.device, repeats=reps, out=str(tmp))
                conv.append(run_job("conv", device=a.device, conv_size=512, repeats=3, bf16=amp))
                res["conv"] = {k: max(c[k] for c in conv) for k in conv[0] if k.startswith("gflops")}
                R["pick"].append({"width": w, "size": size, "amp": amp, **res})
    if 16 in models:  # the default width on the real 1024² micrograph: what each inference change buys
        R["ablation"] = {"width": 16, **run_job("ablation", model=str(models[16]), micrograph=str(test_mic), device=a.device,
                                                repeats=2 if a.quick else 5, compile=a.compile)}
    from cryopick.runtime import resolve_amp

    R["train_default_amp"] = resolve_amp(None, a.device.split(":")[0])  # what `cryopick train` uses here
    R["train"] = [{"width": w, "amp": amp, **run_job("train", width=w, device=a.device, steps=a.train_steps, warmup=1, amp=amp)}
                  for w in a.widths for amp in (False, True)]
    R["ray"] = []
    if not a.no_ray and a.device == "cpu":
        for w in a.ray_widths:
            for n in (1, 2):
                R["ray"].append({"width": w, "workers": n, **run_job("ray", width=w, workers=n, steps=a.ray_steps,
                                                                      warmup=1, out=str(tmp / "ray"))})
    R["finished"] = time.strftime("%H:%M:%S")
    shutil.rmtree(tmp, ignore_errors=True)  # models (width 64: 124 MB each), picks, Ray checkpoints
    (OUT / ("quick.json" if a.quick else "results.json")).write_text(json.dumps(R, indent=1) + "\n")
    body = render(R, a)
    print(body)
    if not a.no_doc:
        update_section(a.section, f"Throughput: picking, training and the machine's limit ({a.device})", body)


if __name__ == "__main__":
    main()
