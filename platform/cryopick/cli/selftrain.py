"""Run a self-training campaign on Ray: train on labeled micrographs, pseudo-label the unlabeled ones, retrain.

Round 0 trains on the labeled micrographs; each later round pseudo-labels the unlabeled ones with
the previous model and retrains on both; Ray Tune picks the threshold and peak distance on the
validation picks; every round is scored (F1 on --test) and tracked in MLflow. The campaign
directory (--out) holds every round's model, picks and metrics; rerunning the same command
resumes after the last complete round.

With no micrographs (no --config data and no --labeled), a small simulated data set is written
into the campaign directory first, so `cryopick selftrain --out campaigns/demo` runs anywhere on a
local Ray with a local MLflow store (sqlite:///<campaign>/mlflow.db; no server needed).
Connects to $RAY_ADDRESS (or --address) when set, else starts a local Ray.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryopick.distributed.orchestrator import CampaignResult
    from cryopick.selftrain.config import SelftrainConfig

# Settings for the simulated demo: small enough for a laptop CPU in a few minutes.
DEMO = {
    "model.base_width": 8,
    "preprocess.target_diameter": 14.0,  # the demo's blobs at 14 px keep it to a few minutes
    "train.steps": 150,
    "train.patch_size": 64,
    "train.batch_size": 8,
    "train.val_every": 50,
    "selftrain.rounds": 3,
    "selftrain.patches_per_epoch": 128,
    "tune.thresholds": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
    "tune.min_distance_fractions": [0.5, 0.75, 1.0],
}

FLAGS = {  # argparse dest -> dotted config key
    "out": "out", "name": "name", "coords": "data.coords", "diameter": "data.diameter", "pixel_size": "data.pixel_size",
    "labeled": "data.labeled", "unlabeled": "data.unlabeled", "validation": "data.validation", "test": "data.test",
    "rounds": "selftrain.rounds", "positive": "selftrain.positive", "negative": "selftrain.negative",
    "labeled_fraction": "selftrain.labeled_fraction", "round0_model": "selftrain.round0_model",
    "min_pseudo_share": "selftrain.min_pseudo_share", "method": "selftrain.method", "labels": "selftrain.labels",
    "expected_particles": "selftrain.expected_particles",
    "steps": "train.steps", "batch_size": "train.batch_size",
    "patch_size": "train.patch_size", "bin": "preprocess.bin", "width": "model.base_width",
    "workers": "ray.num_workers", "cpu_per_worker": "ray.cpu_per_worker", "use_gpu": "ray.use_gpu",
    "address": "ray.address", "num_cpus": "ray.num_cpus", "tracking_uri": "tracking.uri", "experiment": "tracking.experiment",
}


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="campaign YAML (see pipelines/configs/); flags override it")
    parser.add_argument("--out", help="campaign directory (default: campaigns/selftrain)")
    parser.add_argument("--name", help="campaign / MLflow run name (default: the directory name)")
    g = parser.add_argument_group("data (default: a simulated set written into the campaign)")
    g.add_argument("--labeled", nargs="+", help="micrographs with expert picks (files, globs, dirs, manifests)")
    g.add_argument("--unlabeled", nargs="+", help="micrographs to pseudo-label")
    g.add_argument("--validation", nargs="+", help="labeled validation micrographs (default: hold back part of --labeled)")
    g.add_argument("--test", nargs="+", help="labeled micrographs to score every round")
    g.add_argument("--coords", help="directory of expert pick files, matched by stem")
    g.add_argument("--diameter", help="particle diameter: original px (180) or ångström (150A, pixel size from the header or --pixel-size)")
    g.add_argument("--pixel-size", type=float, help="Å/px, overriding MRC headers")
    g.add_argument("--simulate", type=int, default=12, metavar="N",
                   help="micrographs to simulate when none are given (default 12: 1 labeled, 8 unlabeled, 3 test)")
    g = parser.add_argument_group("self-training")
    g.add_argument("--rounds", type=int, help="total rounds including round 0 (default 3)")
    g.add_argument("--labels", choices=("auto", "complete", "sparse"),
                   help="are all particles of the labeled micrographs picked (complete) or only some (sparse)? "
                        "default auto: judged from round 0's picks, with a message")
    g.add_argument("--expected-particles", type=float, metavar="N",
                   help="particles a labeled micrograph holds, picked or not (as Topaz's -n); with sparse picks round 0 "
                        "then learns the unpicked areas as partly particle instead of as background")
    g.add_argument("--method", choices=("teacher", "offline"),
                   help="teacher (default): each round trains a student online against an EMA teacher; "
                        "offline: pseudo-labels predicted once per round by the previous model")
    g.add_argument("--positive", type=float, help="pseudo-label particle threshold (default 0.95)")
    g.add_argument("--negative", type=float, help="pseudo-label background threshold (default 0.05)")
    g.add_argument("--labeled-fraction", type=float, help="share of patches from labeled micrographs in rounds >= 1")
    g.add_argument("--min-pseudo-share", type=float, metavar="F",
                   help="a round trains only if its pseudo-labels mark at least F x the expert labels' particle share; "
                        "otherwise it keeps the previous model and the campaign stops (default 0.1; 0: always train)")
    g.add_argument("--round0-model", metavar="RUNDIR",
                   help="use this picker (`cryopick train` run directory, campaign round directory or model.pt) as round 0 "
                        "instead of training one; it must have the campaign's model, binning and diameter")
    ws = g.add_mutually_exclusive_group()
    ws.add_argument("--warm-start", dest="warm_start", action="store_true", default=None, help="start each round from the previous model (default)")
    ws.add_argument("--fresh", dest="warm_start", action="store_false", help="train each round from scratch (teacher method: a new student from random weights, taught by the "
                    "previous round's model held fixed)")
    g.add_argument("--steps", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--patch-size", type=int)
    g.add_argument("--bin", type=float, help="Fourier-crop binning factor")
    g.add_argument("--width", type=int, help="U-Net base width")
    g = parser.add_argument_group("Ray and MLflow")
    g.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    g.add_argument("--num-cpus", type=int, help="CPUs of a local Ray")
    g.add_argument("--workers", type=int, help="Ray Train workers (default 2)")
    g.add_argument("--cpu-per-worker", type=float, help="CPUs per train worker (default 0.5)")
    g.add_argument("--use-gpu", choices=("auto", "true", "false"))
    g.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///<campaign>/mlflow.db)")
    g.add_argument("--experiment", help="MLflow experiment (default cryopick)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--verbose", action="store_true",
                     help="also show Ray's and Tune's own output, workers' logs and progress bars (default: one line per round)")
    out.add_argument("--quiet", action="store_true", help="no progress bars (the default without --verbose)")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Explicit flags as dotted config keys (unset flags are left out)."""
    out = {key: getattr(args, dest) for dest, key in FLAGS.items() if getattr(args, dest, None) is not None}
    if getattr(args, "warm_start", None) is not None:
        out["selftrain.warm_start"] = args.warm_start
    return out


def simulate_into(campaign: Path, n: int) -> dict[str, Any]:
    """Write a simulated data set into ``campaign/data`` (once) and return the data overrides."""
    import json

    from cryopick.simulate import SimSpec, simulate_dataset

    data = campaign / "data"
    split_file = data / "split.json"
    # few labels, many unlabeled micrographs: where self-training has something to add
    split = json.loads(split_file.read_text()) if split_file.is_file() else simulate_dataset(data, n, SimSpec(seed=7), n_labeled=1)
    mic = lambda names: [str(data / "micrographs" / f"{s}.mrc") for s in names]  # noqa: E731
    return {"data.labeled": mic(split["labeled"]), "data.unlabeled": mic(split["unlabeled"]), "data.test": mic(split["test"]),
            "data.coords": str(data / "coords"), "data.diameter": float(split["diameter"])}


def _diameter_px(config: Path | None, over: dict[str, Any]) -> float:
    """``--diameter`` in pixels; ångström are converted with the pixel size of the data or its first labeled micrograph."""
    from cryopick.io.manifest import resolve_micrographs
    from cryopick.io.micrograph import diameter_in_pixels
    from cryopick.selftrain.config import load_config

    text = over["data.diameter"]
    try:
        return float(text)
    except ValueError:
        pass
    probe = load_config(config, {**over, "data.diameter": 1.0})
    first = resolve_micrographs(probe.data.labeled)[0] if probe.data.labeled else None
    return diameter_in_pixels(text, probe.data.pixel_size, first)


def resolve_config(args: argparse.Namespace) -> SelftrainConfig:
    """YAML + flags (simulating data when none is given) -> validated config; no Ray yet."""
    from cryopick.config import load_yaml
    from cryopick.selftrain.config import load_config

    over = overrides_from_args(args)
    raw = load_yaml(args.config) if args.config else {}
    if "out" not in over and not raw.get("out"):
        over["out"] = "campaigns/selftrain"
    given = [k for k in over if k.startswith("data.")] + [f"data.{k}" for k in (raw.get("data") or {})]
    if given:  # the user's data, every key checked (a missing data.labeled is an error, never a simulation)
        if isinstance(over.get("data.diameter"), str):  # --diameter 180 or 150A
            over["data.diameter"] = _diameter_px(args.config, over)
        return load_config(args.config, over)
    # no data at all: check every other setting first, so a typo fails before anything is written
    load_config(args.config, {**over, "data.diameter": 1.0})
    out = Path(over.get("out") or raw.get("out") or "campaigns/selftrain")
    if "out" not in over and raw.get("out") and args.config and not Path(raw["out"]).is_absolute():
        out = args.config.resolve().parent / raw["out"]
    print(f"no micrographs given: simulating {args.simulate} into {out / 'data'}")
    over = {**({k: v for k, v in DEMO.items() if not args.config}), **simulate_into(out.resolve(), args.simulate),
            **over, "out": str(out)}
    return load_config(args.config, over)  # bad keys/values fail here, before Ray starts


def report(result: CampaignResult) -> None:
    """F1 per round and where the MLflow store is."""
    print(f"\ncampaign {result.campaign_dir}: {len(result.rounds)} round(s); best round {result.best_round}; {result.stopped}")
    print("round  F1      precision  recall  val F1  pseudo+  pseudo-")
    for m in result.rounds:
        print(f"{int(m['round']):5d}  {m['f1']:.4f}  {m['precision']:.4f}     {m['recall']:.4f}  {m['val_f1']:.4f}"
              f"  {m['pseudo_positive']:.4f}   {m['pseudo_negative']:.4f}")
    print(f"\nMLflow store: {result.tracking_uri}")
    print(f"  dashboard:  cryopick dashboard --tracking-uri {result.tracking_uri}")
    print(f"  MLflow UI:  mlflow ui --backend-store-uri {result.tracking_uri}")


def main(args: argparse.Namespace) -> int:
    from cryopick.distributed.orchestrator import run_campaign

    cfg = resolve_config(args)
    report(run_campaign(cfg, progress=args.verbose, verbose=args.verbose))
    return 0
