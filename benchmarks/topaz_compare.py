"""cryopick against Topaz on every shared data set's ``test`` split, side by side in one run.

For each data set (``../shared/data/empiar10017``, ``../shared/data/empiar10028``): Topaz 0.3.20
pretrained (resnet16), Topaz trained on the ``labeled`` micrographs (``topaz train -n N --num-epochs 2
--epoch-size 200``, N = the data set's picks per micrograph; ``topaz preprocess -s 1``; ``topaz
extract -r R -d -1``, R = the particle radius; see ``topaz_runner.py``), and cryopick trained on the
same micrographs with the ``cryopick train`` defaults (or the runs of ``picker_empiar.py`` with
``--cryopick-runs``). With ``--topaz-runs K`` Topaz is trained K times (its training is unseeded, so each
run is an independent draw) and each model picks ``test``; with several ``--cryopick-runs`` roots (the
training seeds of ``picker_empiar.py --seed-outs``) each cryopick model picks ``test`` too, so both pickers'
best F1 is reported as mean ± sd over runs measured side by side. Every picker runs as its command-line tool in its own process over the test
micrographs; seconds per micrograph are that process's wall time ÷ micrographs (start-up included;
Topaz: preprocess + extract). All picks are scored with ``cryopick.evaluation.metrics`` (greedy
one-to-one matching, radius half the diameter). Each data set's results are kept in
``OUT/NAME/summary.json``; ``--render`` rebuilds the section from them without measuring.

    python benchmarks/topaz_compare.py [--datasets empiar10017 empiar10028] [--cryopick-runs benchmarks/out/picker_empiar]
    python benchmarks/topaz_compare.py --topaz-runs 3 --cryopick-runs benchmarks/out/picker_empiar{,_s1,_s2}
    python benchmarks/topaz_compare.py --quick --no-doc      # check the script (1 micrograph, tiny training)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Topaz (torch, GNU OpenMP) and cryopick children inherit this: on a shared 2-core machine
# OpenMP's default busy-waiting slows whichever tool has it by several times under contention.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, git_rev, update_section  # noqa: E402
from topaz_runner import ensure_topaz_venv, run_topaz, train_topaz  # noqa: E402

SHARED = Path(os.environ.get("CRYOPICK_DATA_ROOT", REPO.parent / "shared" / "data"))  # as label_efficiency.py reads it
OUT = REPO / "benchmarks" / "out" / "topaz_compare"
TITLE = "cryopick against Topaz on every shared data set's `test` split (one run, side by side)"
LOW_THRESHOLD = 0.02  # cryopick picks kept for the PR sweep (scores >= this)


@dataclasses.dataclass(frozen=True)
class DataSet:
    """A shared data set and the Topaz settings a user would give it."""

    name: str
    title: str
    diameter: float  # original px (the data set's README)
    topaz_n: int  # expected particles per micrograph (`topaz train -n`): its picks / micrographs

    @property
    def data(self) -> Path:
        return SHARED / self.name

    @property
    def radius(self) -> float:  # match radius
        return self.diameter / 2


DATASETS = {d.name: d for d in (DataSet("empiar10017", "EMPIAR-10017 β-galactosidase", 27.0, 600),
                                DataSet("empiar10028", "EMPIAR-10028 80S ribosome", 56.0, 90))}


def run_measured(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd`` (OMP_WAIT_POLICY=PASSIVE); return (wall s, its peak RSS in GB, stdout)."""
    env = dict(os.environ)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # reap it ourselves: this child's own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        fo.seek(0), fe.seek(0)
        out, err = fo.read(), fe.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return seconds, usage.ru_maxrss / 2**20, out


def score(ds: DataSet, picks: Path, threshold: float | None = None) -> dict[str, float]:
    """Pooled P/R/F1 over the test micrographs at ``threshold`` and at the best threshold."""
    from cryopick.evaluation.metrics import score_at, summarize
    from cryopick.evaluation.evaluate import evaluate_dirs

    ev = evaluate_dirs(picks, ds.data / "coords", ds.diameter, radius=ds.radius)
    s = summarize(ev.curve, threshold)
    bp, br, bf, bn, _ = score_at(ev.curve, s.best_threshold)
    return {"precision": s.precision, "recall": s.recall, "f1": s.f1, "n_picks": s.n_picks, "n_true": s.n_true,
            "ap": s.average_precision, "best_f1": bf, "best_threshold": s.best_threshold, "best_precision": bp,
            "best_recall": br, "best_n_picks": bn, "n_micrographs": len(ev.per_micrograph)}


def banded_scores(ds: DataSet, R: dict[str, Any], out: Path) -> None:
    """Topaz's picks scored again with cryopick's learned edge band removed, so both drop the same picks."""
    from cryopick.inference.border import drop_near_edge
    from cryopick.io.coords import read_coords, write_coords
    from cryopick.io.micrograph import read_shape

    band = float(R["cryopick_config"]["result"].get("border", 0.0))
    R["edge_band"] = band
    for key in ("topaz_pretrained", "topaz_trained"):
        with tempfile.TemporaryDirectory() as tmp:
            for f in sorted((out / key).iterdir()):
                mic = ds.data / "micrographs" / f"{f.stem}.mrc"
                if not mic.is_file():  # Topaz's merged pick file, logs
                    continue
                xy, sc = read_coords(f)
                xy, sc = drop_near_edge(xy, sc, read_shape(mic), band)
                write_coords(Path(tmp) / f"{f.stem}.star", xy, sc, "star")
            R[key]["score_band"] = score(ds, Path(tmp))


def cryopick_pick(model: Path, mics: list[Path], out: Path, extra: list[str]) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["cryopick", "pick", "--model", str(model), "--micrographs", *map(str, mics), "--out", str(out), "--quiet", *extra]
    load = os.getloadavg()[0]
    wall, rss, stdout = run_measured(cmd)
    m = re.search(r"\(([\d.]+) s each\)", stdout)
    return {"wall_s": wall, "s_per_mic": wall / len(mics), "in_process_s_per_mic": float(m.group(1)) if m else None,
            "peak_rss_gb": rss, "load_before": load, "load_after": os.getloadavg()[0], "cmd": " ".join(cmd[:2] + extra)}


def measure(ds: DataSet, out: Path, cryopick_runs: list[Path], quick: bool, reuse_topaz: bool = False,
            topaz_runs: int = 1) -> dict[str, Any]:
    """Topaz (pretrained, trained ``topaz_runs`` times) and cryopick (each of ``cryopick_runs``' models, or one
    trained here) on one data set's ``test`` micrographs.

    ``reuse_topaz``: take Topaz's figures from the data set's last summary (same Topaz, same picks) and
    measure cryopick only, e.g. after a cryopick change.
    """
    split = json.loads((ds.data / "split.json").read_text())
    mics = {k: [ds.data / "micrographs" / f"{n}.mrc" for n in v] for k, v in split.items()}
    test = mics["test"][:1] if quick else mics["test"]
    out.mkdir(parents=True, exist_ok=True)
    R: dict[str, Any] = {"dataset": ds.name, "started": time.strftime("%H:%M:%S"), "n_test": len(test),
                         "n_labeled": len(mics["labeled"]), "argv": sys.argv, "commit": git_rev(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                         "topaz_n": ds.topaz_n, "topaz_radius": int(round(ds.radius))}
    last = out / "summary.json"
    if reuse_topaz and last.is_file():
        old = json.loads(last.read_text())
        R.update({k: old[k] for k in ("topaz_train_s", "topaz_train_load", "topaz_model", "topaz_pretrained", "topaz_trained")})
        R["topaz_trained_runs"] = old.get("topaz_trained_runs", [_topaz_record(old)])
        R["topaz_measured"] = old.get("topaz_measured", old["started"])
    else:
        _measure_topaz(ds, R, mics, test, out, quick, topaz_runs)
        R["topaz_measured"] = R["started"]
    R = _measure_cryopick(ds, R, mics, test, out, cryopick_runs[0] if cryopick_runs else None, quick)
    R["cryopick_runs"] = [_main_cryopick_record(R)]
    for i, root in enumerate(cryopick_runs[1:], start=1):
        run_dir = (root / ds.name / "run").resolve()
        config = json.loads((run_dir / "config.json").read_text())
        cryopick_pick(run_dir, test, out / f"cryopick_low_{i}", ["--no-amp", "--threshold", str(LOW_THRESHOLD)])
        s = score(ds, out / f"cryopick_low_{i}", float(config["result"]["threshold"]))
        R["cryopick_runs"].append(_cryopick_record(str(run_dir), config, s))
        print(ds.name, "cryopick", run_dir, json.dumps(R["cryopick_runs"][-1]), flush=True)
    return R


def _topaz_record(R: dict[str, Any]) -> dict[str, Any]:
    """The repeat record (model, training seconds, best F1) of a data set's main trained Topaz."""
    return {"model": R["topaz_model"], "train_s": R["topaz_train_s"], "best_f1": R["topaz_trained"]["score"]["best_f1"]}


def _main_cryopick_record(R: dict[str, Any]) -> dict[str, Any]:
    """The repeat record of a data set's main (timed) cryopick model."""
    return _cryopick_record(R["cryopick_run"], R["cryopick_config"], R["cryopick"]["score"])


def _cryopick_record(run: str, config: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    """The repeat record (run, seed, best F1, F1 at the stored threshold) of one cryopick model's `test` score."""
    return {"run": run, "seed": config["train"]["seed"], "best_f1": s["best_f1"], "f1": s["f1"]}


def _measure_topaz(ds: DataSet, R: dict[str, Any], mics: dict[str, list[Path]], test: list[Path], out: Path, quick: bool,
                   runs: int = 1) -> None:
    """Topaz: train on `labeled`, pick `test` with the pretrained and the trained model; then ``runs - 1`` more
    trainings, each model picking `test` (best F1 only)."""
    topaz = ensure_topaz_venv()
    kw = {"n": ds.topaz_n, "num_epochs": 1, "epoch_size": 5} if quick else {"n": ds.topaz_n}
    load = os.getloadavg()[0]
    tmodel, R["topaz_train_s"] = train_topaz(topaz, mics["labeled"], ds.data / "coords", out / "topaz_train", **kw)
    R["topaz_train_load"] = [load, os.getloadavg()[0]]
    R["topaz_model"] = str(tmodel)
    for key, model in (("topaz_pretrained", None), ("topaz_trained", str(tmodel))):
        load = os.getloadavg()[0]
        res = run_topaz(topaz, test, out / key, model=model, radius=R["topaz_radius"])
        res["load_before"] = load
        res["s_per_mic"] = (res["preprocess_s"] + res["extract_s"]) / len(test)
        res["score"] = score(ds, out / key)
        R[key] = res
        print(ds.name, key, json.dumps(res["score"]), flush=True)
    R["topaz_trained_runs"] = [_topaz_record(R)]
    for i in range(1, runs):
        model, seconds = train_topaz(topaz, mics["labeled"], ds.data / "coords", out / f"topaz_train_{i}", **kw)
        run_topaz(topaz, test, out / f"topaz_trained_{i}", model=str(model), radius=R["topaz_radius"])
        R["topaz_trained_runs"].append({"model": str(model), "train_s": seconds,
                                        "best_f1": score(ds, out / f"topaz_trained_{i}")["best_f1"]})
        print(ds.name, f"topaz_trained_{i}", json.dumps(R["topaz_trained_runs"][-1]), flush=True)


def _measure_cryopick(ds: DataSet, R: dict[str, Any], mics: dict[str, list[Path]], test: list[Path], out: Path,
                      cryopick_runs: Path | None, quick: bool) -> dict[str, Any]:
    """cryopick: train on the same micrographs with the current defaults (or reuse picker_empiar's run), pick `test`."""
    from cryopick.config import ModelConfig, TrainConfig

    defaults = {"model": dataclasses.asdict(ModelConfig()), "train": dataclasses.asdict(TrainConfig())}
    reuse = cryopick_runs / ds.name / "run" if cryopick_runs else None
    if reuse is not None and (reuse / "config.json").is_file() and not quick:
        run_dir, R["cryopick_train_s"] = reuse.resolve(), None
        timed = reuse.parent / "summary.json"  # picker_empiar.py's record of that run
        if timed.is_file():
            R["cryopick_train_s_elsewhere"] = json.loads(timed.read_text())["train_s"]
    else:
        run_dir = out / "cryopick_train"
        shutil.rmtree(run_dir, ignore_errors=True)
        cmd = ["cryopick", "train", "--micrographs", *map(str, mics["labeled"]), "--coords", str(ds.data / "coords"),
               "--diameter", str(ds.diameter), "--out", str(run_dir), "--quiet"] + (["--steps", "20", "--val-every", "10"] if quick else [])
        load = os.getloadavg()[0]
        R["cryopick_train_s"], R["cryopick_train_rss_gb"], _ = run_measured(cmd)
        R["cryopick_train_load"] = [load, os.getloadavg()[0]]
    config = json.loads((run_dir / "config.json").read_text())
    R["cryopick_run"], R["cryopick_config"], R["defaults_now"] = str(run_dir), config, defaults
    stored = float(config["result"]["threshold"])
    # timed as a user runs it (stored threshold) in float32, then with weak picks kept for the PR sweep; bfloat16 below
    R["cryopick"] = cryopick_pick(run_dir, test, out / "cryopick_default", ["--no-amp"])
    R["cryopick_low"] = cryopick_pick(run_dir, test, out / "cryopick_low", ["--no-amp", "--threshold", str(LOW_THRESHOLD)])
    R["cryopick"]["score"] = score(ds, out / "cryopick_low", stored)
    R["cryopick_bf16"] = cryopick_pick(run_dir, test, out / "cryopick_bf16", ["--amp"])
    R["cryopick_bf16_low"] = cryopick_pick(run_dir, test, out / "cryopick_bf16_low", ["--amp", "--threshold", str(LOW_THRESHOLD)])
    R["cryopick_bf16"]["score"] = score(ds, out / "cryopick_bf16_low", stored)
    banded_scores(ds, R, out)
    R["finished"] = time.strftime("%H:%M:%S")
    return R


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=[n for n in DATASETS if (SHARED / n).is_dir()], choices=list(DATASETS))
    p.add_argument("--cryopick-runs", type=Path, nargs="+", default=[],
                   help="reuse ROOT/NAME/run (`picker_empiar.py`'s runs) instead of training; several roots (its --seed-outs): "
                        "each model picks `test` too, the first is timed")
    p.add_argument("--topaz-runs", type=int, default=1, help="train Topaz this many times (unseeded, independent draws)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--quick", action="store_true", help="1 test micrograph, tiny training: checks the script")
    p.add_argument("--no-doc", action="store_true")
    p.add_argument("--section", default="topaz-compare")
    p.add_argument("--render", action="store_true", help="rebuild the section from the saved summaries (no measuring)")
    p.add_argument("--reuse-topaz", action="store_true", help="keep Topaz's figures from the last run, measure cryopick again")
    a = p.parse_args()
    results = []
    for name in a.datasets:
        ds, out = DATASETS[name], a.out.resolve() / ("quick" if a.quick else "run") / name
        if a.render:
            R = json.loads((out / "summary.json").read_text())
        else:
            R = measure(ds, out, a.cryopick_runs, a.quick, a.reuse_topaz, a.topaz_runs)
            (out / "summary.json").write_text(json.dumps(R, indent=1, default=str) + "\n")
        results.append(R)
    commits = None
    if a.render:  # the doc names the command and the commits that measured, not the checkout that rendered
        sys.argv = results[0].get("argv", sys.argv)
        commits = list(dict.fromkeys(R.get("commit", "unknown") for R in results))
    body = render(results)
    print(body)
    if not a.no_doc:
        update_section(a.section, TITLE, body, commits=commits)


def summary_row(R: dict[str, Any]) -> list[str]:
    """The side-by-side table's rows for one data set: picker, best F1, F1 at stored threshold, s / mic, training."""
    ds, t_tr = DATASETS[R["dataset"]], R["topaz_trained"]
    c = R["cryopick_config"]
    minutes = lambda s: "–" if s is None else f"{s / 60:.1f}"  # noqa: E731
    elsewhere = R.get("cryopick_train_s_elsewhere")
    cp_train = minutes(R["cryopick_train_s"]) if R["cryopick_train_s"] is not None or elsewhere is None else f"{minutes(elsewhere)}*"
    cp, tp, tt = R["cryopick"], R["topaz_pretrained"], R["topaz_trained"]
    return [
        f"| {ds.title} | Topaz pretrained resnet16 | {tp['score']['best_f1']:.3f} | – | {tp['s_per_mic']:.2f} | – |",
        f"| {ds.title} | Topaz trained on {R['n_labeled']} `labeled` | {tt['score']['best_f1']:.3f} | – | {t_tr['s_per_mic']:.2f} | {minutes(R['topaz_train_s'])} |",
        f"| {ds.title} | cryopick width {c['model']['base_width']} (bin {c['preprocess']['bin']:g}) | **{cp['score']['best_f1']:.3f}** | "
        f"**{cp['score']['f1']:.3f}** | {cp['s_per_mic']:.2f} | {cp_train} |",
    ]


def render(results: list[dict[str, Any]]) -> str:
    out = ["Each picker is its command-line tool, one process over a data set's `test` micrographs (1024², expert picks): "
           "*s / mic* = that wall time ÷ micrographs, process start-up included (Topaz: `topaz preprocess -s 1` + "
           "`topaz extract -r R -d -1`, R = the particle radius, default threads). Both tools run with "
           f"`OMP_WAIT_POLICY={results[0].get('omp_wait_policy', 'PASSIVE')}`. F1 at the best threshold for each picker; for "
           "cryopick also at the threshold stored with its model (Topaz stores none). Match radius: half the diameter. "
           "*train min*: training wall time (*: the reused run of `picker_empiar.py`, timed there).", "",
           "| data set | picker | best F1 | F1 at stored threshold | s / mic | train min |", "|---|---|---|---|---|---|"]
    for R in results:
        out += summary_row(R)
    out.append("")
    if any(len(R.get("topaz_trained_runs", [])) > 1 or len(R.get("cryopick_runs", [])) > 1 for R in results):
        out += repeats(results)
    for R in results:
        out += detail(R)
    return "\n".join(out)


def _spread(values: list[float]) -> str:
    """'mean ± sd (v1, v2, ...)' with the sample sd; one value alone as itself."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    m, sd = statistics.mean(values), statistics.stdev(values)
    return f"{m:.3f} ± {sd:.3f} ({', '.join(f'{v:.3f}' for v in values)})"


def _verdict(cryopick: list[float], topaz: list[float]) -> str:
    """cryopick's mean best F1 against Topaz's: above / below only beyond two standard errors of the difference."""
    gap = statistics.mean(cryopick) - statistics.mean(topaz)
    if min(len(cryopick), len(topaz)) < 2:
        return f"cryopick's best F1 {'above' if gap > 0 else '**not above**'} trained Topaz's ({gap:+.3f}; one training of one of them)"
    se = (statistics.variance(cryopick) / len(cryopick) + statistics.variance(topaz) / len(topaz)) ** 0.5
    word = "above" if gap > 2 * se else "**below**" if gap < -2 * se else "**level with**"
    return f"cryopick's mean best F1 {word} trained Topaz's ({gap:+.3f}, standard error of the difference {se:.3f})"


def repeats(results: list[dict[str, Any]]) -> list[str]:
    """Each trained picker over its repeats, measured in this run: Topaz's unseeded trainings, cryopick's seeds."""
    out = ["Trained pickers over repeated trainings, every model picking the same `test` micrographs in this run "
           "(Topaz: independent unseeded trainings; cryopick: training seeds of `picker_empiar.py`):", "",
           "| data set | picker | trainings | best F1, mean ± sd (each) | F1 at stored threshold, mean ± sd (each) |",
           "|---|---|---|---|---|"]
    verdicts = []
    for R in results:
        ds = DATASETS[R["dataset"]]
        tz = R.get("topaz_trained_runs", [_topaz_record(R)])
        cp = R.get("cryopick_runs", [_main_cryopick_record(R)])
        out.append(f"| {ds.title} | Topaz trained on {R['n_labeled']} `labeled` | {len(tz)} | {_spread([r['best_f1'] for r in tz])} | – |")
        out.append(f"| {ds.title} | cryopick (seeds {', '.join(str(r['seed']) for r in cp)}) | {len(cp)} | "
                   f"{_spread([r['best_f1'] for r in cp])} | {_spread([r['f1'] for r in cp])} |")
        verdicts.append(f"{ds.title}: {_verdict([r['best_f1'] for r in cp], [r['best_f1'] for r in tz])}")
    return out + ["", "- " + "; ".join(verdicts) + ".", ""]


def detail(R: dict[str, Any]) -> list[str]:
    """One data set's full figures: precision / recall, AP, memory, load, bfloat16, edge band."""
    ds, c = DATASETS[R["dataset"]], R["cryopick_config"]
    tr, md = c["train"], c["model"]
    now = R["defaults_now"]
    same = tr["steps"] == now["train"]["steps"] and md == now["model"]
    t_tr = R["topaz_trained"]
    rows = [f"**{ds.title}** (cryopick measured {R['started']}–{R['finished']}, Topaz from {R.get('topaz_measured', R['started'])}, "
            f"{R['n_test']} `test` micrographs, match radius "
            f"{ds.radius:g} px, Topaz `train -n {R['topaz_n']}`, `extract -r {R['topaz_radius']}`)", "",
            "| picker | s / micrograph (end to end) | in-process s / mic | peak RSS GB | best F1 (P / R) | threshold | "
            "F1 at stored threshold (P / R) | AP | load |", "|---|---|---|---|---|---|---|---|---|"]
    for key, name in (("topaz_pretrained", "Topaz pretrained resnet16"), ("topaz_trained", f"Topaz trained on {R['n_labeled']} `labeled`")):
        r, s = R[key], R[key]["score"]
        rows.append(f"| {name} | {r['s_per_mic']:.2f} (preprocess {r['preprocess_s'] / R['n_test']:.2f} + extract "
                    f"{r['extract_s_per_micrograph']:.2f}) | – | {r['extract_peak_rss_gb']:.2f} | **{s['best_f1']:.3f}** "
                    f"({s['best_precision']:.3f} / {s['best_recall']:.3f}) | {s['best_threshold']:.2f} | – | {s['ap']:.3f} | "
                    f"{r['load_before']:.1f}→{r['loadavg_1m_after']:.1f} |")
    for key, name in (("cryopick", f"cryopick width {md['base_width']}, float32"), ("cryopick_bf16", f"cryopick width {md['base_width']}, `--amp` (bfloat16)")):
        r, s = R[key], R[key]["score"]
        rows.append(f"| {name} | {r['s_per_mic']:.2f} | {r['in_process_s_per_mic']:.2f} | {r['peak_rss_gb']:.2f} | "
                    f"**{s['best_f1']:.3f}** ({s['best_precision']:.3f} / {s['best_recall']:.3f}) | {s['best_threshold']:.3f} | "
                    f"**{s['f1']:.3f}** ({s['precision']:.3f} / {s['recall']:.3f}) | {s['ap']:.3f} | "
                    f"{r['load_before']:.1f}→{r['load_after']:.1f} |")
    speedup = t_tr["s_per_mic"] / R["cryopick"]["s_per_mic"]
    f1s = {k: R[k]["score"]["best_f1"] for k in ("topaz_pretrained", "topaz_trained", "cryopick", "cryopick_bf16")}
    train_t = "reused `picker_empiar.py` run (timed there)" if R["cryopick_train_s"] is None else f"{R['cryopick_train_s'] / 60:.1f} min wall"
    band = R["topaz_trained"]["score_band"]
    rows += ["",
             f"- Training: Topaz {R['topaz_train_s'] / 60:.1f} min, model `{Path(R['topaz_model']).name}`; cryopick {train_t}: "
             f"width {md['base_width']}, {tr['steps']} steps × batch {tr['batch_size']} × {tr['patch_size']}², bin {c['preprocess']['bin']:g}, "
             f"stored threshold {c['result']['threshold']:.3f}" + ("" if same else " (**not** the current `cryopick train` defaults)") + ".",
             f"- cryopick best F1 {f1s['cryopick']:.3f} vs Topaz trained {f1s['topaz_trained']:.3f} and pretrained {f1s['topaz_pretrained']:.3f}: "
             f"{'higher than both' if f1s['cryopick'] > max(f1s['topaz_trained'], f1s['topaz_pretrained']) else '**not higher than both**'} "
             "in this one training each (over repeated trainings: the verdict above); "
             f"{speedup:.1f}× faster per micrograph than trained Topaz; bfloat16 changes best F1 by {f1s['cryopick_bf16'] - f1s['cryopick']:+.3f}.",
             f"- Edge band: cryopick drops picks within the {R['edge_band']:.1f} px band its training picks left empty; Topaz's picks "
             f"with that band removed too: trained best F1 {band['best_f1']:.3f}, pretrained {R['topaz_pretrained']['score_band']['best_f1']:.3f}.", ""]
    return rows


if __name__ == "__main__":
    main()
