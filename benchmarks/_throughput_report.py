"""Markdown for ``throughput.py``: tables of the measured figures and the issue #5 targets."""

from __future__ import annotations

import argparse
import statistics
from typing import Any


def render(R: dict[str, Any], a: argparse.Namespace) -> str:
    """Markdown tables of the measured figures."""
    conv32, conv16 = R["conv"]["gflops_fp32"], R["conv"]["gflops_bf16"]
    fl = R["flops"]["widths"]
    out = [f"Measured {R['started']}–{R['finished']} (machine clock) on `{a.device}`. Each row is a fresh process; "
           "*peak RSS* is that process's `ru_maxrss` (whole process: Python, torch and its libraries; "
           "*after import* is its RSS once torch and cryopick are loaded). *load* is the 1-minute load average "
           f"before → after the row ({R.get('cores', 2)} cores, shared with other work: rows with load ≫ cores are slowed by contention).",
           "",
           f"**Reference conv** (64→64, 3×3, 1×64×512², channels-last, inference mode, best of 5): "
           f"{conv32:.0f} GFLOP/s float32, {conv16:.0f} GFLOP/s under bfloat16 autocast "
           f"(load {R['conv']['load_before']:.1f}).",
           "",
           "| width | parameters | FLOPs / pixel (counted) |", "|---|---|---|"]
    out += [f"| {w} | {v['params']:,} | {v['flops_per_px'] / 1e3:.0f} k |" for w, v in fl.items()]
    out += ["", f"**Picking, end to end** (read → Fourier-crop bin {R.get('bin', 2.0):g} + normalise → heatmap, tile 512, overlap 0.25, "
            f"batch 4, {R['pick'][0].get('tta', 1)} test-time-augmentation view(s) unless the row says otherwise (`cryopick pick --tta`, default 8; the network "
            "time scales with the views) → peaks → `.star`; *tiles* counts every view's tiles). Untrained weights of each width (speed does not depend on them; "
            "pick counts therefore are not meaningful). *cold* = the first micrograph of the process, "
            "*warm* = median of the following ones. *net share* = counted FLOPs × pixels through the network "
            "(tiles incl. overlap) ÷ heatmap-stage seconds (warm) ÷ *ref conv*, the reference conv at the same precision timed "
            "(best of 3) in its own process right before and right after the row, the higher of the two; "
            "the heatmap stage includes tile cutting and blending, so this is a lower bound on the network's own share.",
            "", "| micrograph | width | precision | cold s | warm s | of which heatmap s | read+prep s | peaks+write s "
            "| net GFLOP/s | ref conv GFLOP/s | net share | peak RSS MB (after import) | load |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in R["pick"]:
        runs = r["runs"]
        warm = runs[1:] or runs
        med = lambda k, warm=warm: statistics.median(x[k] for x in warm)  # noqa: E731
        gflop = fl[str(r["width"])]["flops_per_px"] * r["net_pixels"] / 1e9
        rate = gflop / med("heatmap")
        c = r.get("conv", R["conv"])  # reference timed beside this row (older results: the global one)
        ref = c["gflops_bf16"] if r["amp"] else c["gflops_fp32"]
        gpu = f", GPU {r['gpu_peak_mb']:.0f}" if r.get("gpu_peak_mb") else ""
        views = "" if r.get("tta", 1) == R["pick"][0].get("tta", 1) else f", {r['tta']} view{'s' if r['tta'] > 1 else ''}"
        out.append(f"| {r['size']} ({r['n_tiles']} tile{'s' if r['n_tiles'] > 1 else ''}{views}) | {r['width']} | {'bf16' if r['amp'] else 'fp32'} | "
                   f"{runs[0]['total']:.2f} | {med('total'):.2f} | {med('heatmap'):.2f} | "
                   f"{med('read') + med('preprocess'):.2f} | {med('peaks') + med('write'):.3f} | {rate:.0f} | {ref:.0f} | "
                   f"{100 * rate / ref:.0f} % | {r['peak_rss_mb']:.0f} ({r['rss_import_mb']:.0f}{gpu}) | "
                   f"{r['load_before']:.1f}→{r['load_after']:.1f} |")
    if R.get("ablation"):
        ab = R["ablation"]
        base = next(iter(ab["seconds"].values()))
        out += ["", f"**Inference paths** (heatmap of the 1024² test micrograph, width {ab['width']}, one process, interleaved, "
                f"best of the timed rounds; load {ab['load_before']:.1f}→{ab['load_after']:.1f}):", "",
                "| path | heatmap s | speed-up |", "|---|---|---|"]
        out += [f"| {k} | {v:.3f} | {base / v:.2f}× |" for k, v in ab["seconds"].items()]
    starts = [r["import_s"] + r["load_s"] for r in R["pick"]]
    out += ["", f"Process start-up (import torch + cryopick, load the model), not in the table: "
            f"{min(starts):.1f}–{max(starts):.1f} s per process; paid once per `cryopick pick` run or campaign worker."]
    patch = R["train"][0].get("patch", 128) if R.get("train") else 128
    out += ["", f"**Training, one process** (batch 16 × {patch}² patches sampled from the 5 `labeled` micrographs, "
            f"AdamW, masked BCE, channels-last; patches/s over the steps after 1 warm-up step; `cryopick train` "
            f"uses {'bf16' if R.get('train_default_amp') else 'fp32'} here by default):", "",
            "| width | precision | s / step (median) | patches / s | peak RSS MB | load |", "|---|---|---|---|---|---|"]
    out += [f"| {t['width']} | {'bf16' if t.get('amp') else 'fp32'} | {t['step_s']:.2f} | {t['patches_per_s']:.1f} | {t['peak_rss_mb']:.0f} | "
            f"{t['load_before']:.1f}→{t['load_after']:.1f} |" for t in R["train"]]
    if R["ray"]:
        out += ["", "**Training, Ray Train** (`cryopick.distributed.train_loop.fit`: DDP over gloo, patches streamed by "
                "Ray Data; float32, contiguous layout as that loop runs; batch 16 per worker, 2 CPUs split between the workers; rate between the first and the last "
                "report, which includes one checkpoint; Ray start-up excluded):", "",
                "| width | workers | threads / worker | patches / s (all workers) | load |", "|---|---|---|---|---|"]
        out += [f"| {r['width']} | {r['workers']} | {r['threads_per_worker']} | {r['patches_per_s']:.1f} | "
                f"{r['load_before']:.1f}→{r['load_after']:.1f} |" for r in R["ray"]]
    elif a.device == "cpu":
        out += ["", "Ray Train rows were not run (`--no-ray`)."]
    return "\n".join(out + targets(R, a))


def _warm(r: dict[str, Any], key: str) -> float:
    return statistics.median(x[key] for x in (r["runs"][1:] or r["runs"]))


def targets(R: dict[str, Any], a: argparse.Namespace) -> list[str]:
    """The issue's targets against the rows above: network share, memory at width 32, memory vs size."""
    fl = R["flops"]["widths"]
    share = {}
    rows = [r for r in R["pick"] if r.get("tta", 1) == R["pick"][0].get("tta", 1)]  # the default views; other counts only below
    for r in rows:
        rate = fl[str(r["width"])]["flops_per_px"] * r["net_pixels"] / 1e9 / _warm(r, "heatmap")
        c = r.get("conv", R["conv"])
        share[(r["size"], r["width"], r["amp"])] = rate / c["gflops_bf16" if r["amp"] else "gflops_fp32"], rate / R["conv"]["gflops_fp32"]
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    big = sizes[-1]
    lines = ["", "**Targets** (issue #5; from the rows above):", ""]
    for amp in dict.fromkeys(r["amp"] for r in rows):
        s = {w: share[(big, w, amp)] for (z, w, m) in share if z == big and m == amp}
        lines.append(f"- Network at ≥ 50 % of the measured conv throughput ({'bf16' if amp else 'fp32'}, {big}, heatmap stage): "
                     + ", ".join(f"width {w} {100 * v[0]:.0f} %" + (f" ({100 * v[1]:.0f} % of the fp32 reference above)" if amp else "")
                                 for w, v in s.items())
                     + " → met for " + (", ".join(str(w) for w, v in s.items() if v[0] >= 0.5) or "none")
                     + ", missed for " + (", ".join(str(w) for w, v in s.items() if v[0] < 0.5) or "none") + ".")
    mem = {(r["size"], r["width"], r["amp"]): r["peak_rss_mb"] for r in rows}
    if (big, 32, False) in mem:
        lines.append(f"- Peak memory ≤ 2 GB at width 32 for {big}: {mem[(big, 32, False)] / 1024:.2f} GB (whole process, fp32) → "
                     f"{'met' if mem[(big, 32, False)] <= 2048 else 'missed'}.")
    if len(sizes) > 1:
        tiles = {r["size"]: r["n_tiles"] // r.get("tta", 1) for r in rows}  # per view: views run one after another
        widths = list(dict.fromkeys(w for (_, w, m) in mem if not m))
        per_w = [f"width {w}: " + " → ".join(f"{mem[(z, w, False)]:.0f}" for z in sizes if (z, w, False) in mem) + " MB"
                 for w in widths]
        lines.append(f"- Peak memory bounded by the tile batch, not the micrograph (fp32, {' → '.join(sizes)}; "
                     + ", ".join(f"{tiles[z]} tile{'s' if tiles[z] > 1 else ''}" for z in sizes)
                     + f" of 512² per view, at most {4} per batch): " + "; ".join(per_w) + ". A 1024² micrograph is a single tile "
                     "(a batch of 1); from the first size with ≥ 4 tiles on, the network's share is one full batch and what "
                     "still grows is only the micrograph-sized arrays (raw image, its FFT, binned image, heatmap).")
    if a.device.startswith("cuda"):
        for r in (r for r in R["pick"] if r["width"] == 64 and r["size"] == big):
            t = _warm(r, "total")
            lines.append(f"- Full width (64), {big}, {'bf16' if r['amp'] else 'fp32'}, bin {R.get('bin', 2.0):g}, "
                         f"{r.get('tta', 1)} view{'s' if r.get('tta', 1) > 1 else ''}: {1000 * t:.0f} ms end to end (warm; heatmap {1000 * _warm(r, 'heatmap'):.0f} ms) "
                         f"against the seed design's 500 ms on an RTX A6000 → {'met' if t <= 0.5 else 'missed'} on this GPU.")
    if a.device == "cpu":
        lines.append("- The full-width timing on a 3710×3838 micrograph on a GPU, against the seed design's 500 ms (RTX A6000), "
                     "is not measured on this CPU machine: section \"Throughput on a GPU\" below, measured by "
                     "`python benchmarks/throughput.py --device cuda --large 3710x3838 --widths 64 --no-ray --amp --tta 8 1 "
                     "--section throughput_cuda`.")
    return lines
