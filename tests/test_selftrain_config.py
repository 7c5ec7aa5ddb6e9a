"""Self-training configuration, path checks, campaign state and stopping rule (no Ray)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cryopick.errors import CryopickError
from cryopick.selftrain.config import load_config, resolve_data
from cryopick.selftrain.state import (
    CampaignState, campaign_stop, completed_rounds_on_disk, config_mismatch, flatten, patch_counts, round_dir, stop_reason,
    too_few_pseudo_particles,
)


def _data(sim: Path) -> dict[str, object]:
    split = json.loads((sim / "split.json").read_text())
    mic = lambda names: [str(sim / "micrographs" / f"{n}.mrc") for n in names]  # noqa: E731
    return {"data.labeled": mic(split["labeled"]), "data.unlabeled": mic(split["unlabeled"]),
            "data.test": mic(split["test"]), "data.coords": str(sim / "coords"), "data.diameter": 24.0}


def test_defaults_and_overrides(tmp_path: Path, sim_data: Path) -> None:
    cfg = load_config(None, {"out": str(tmp_path / "camp"), "train.steps": 7, **_data(sim_data)})
    assert cfg.train.steps == 7 and cfg.name == "camp"
    assert cfg.selftrain.positive == 0.95 and cfg.selftrain.negative == 0.05
    assert cfg.ray.cpu_per_worker == 0.5  # < 1 CPU: leaves room for Ray Data on 2 cores
    assert cfg.tracking_uri() == f"sqlite:///{(tmp_path / 'camp').resolve()}/mlflow.db"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("selftrain.bogus", 1, "unknown config key selftrain.bogus"),
        ("train.steps", "many", "train.steps must be of type int"),
        ("selftrain.positive", 0.01, "selftrain.negative and selftrain.positive"),
        ("selftrain.rounds", 0, "selftrain.rounds must be >= 1"),
        ("ray.use_gpu", "maybe", "ray.use_gpu must be auto, true or false"),
        ("ray.cpu_per_worker", 0, "ray.cpu_per_worker must be positive"),
        ("ray.predict_actors", -1, "ray.predict_actors must be >= 0"),
        ("data.diameter", -3, "data.diameter must be positive"),
        ("tune.thresholds", [1.5], "tune.thresholds"),
        ("train.patch_size", 40, "train.patch_size must be a multiple of 16"),
        ("selftrain.min_pseudo_share", 1.5, "selftrain.min_pseudo_share must be in"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, sim_data: Path, key: str, value: object, message: str) -> None:
    with pytest.raises(CryopickError, match=message.replace(".", r"\.")):
        load_config(None, {"out": str(tmp_path), **_data(sim_data), key: value})


def test_yaml_paths_are_relative_to_the_file(tmp_path: Path, sim_data: Path) -> None:
    (tmp_path / "cfg.yaml").write_text(
        f"out: camp\ndata:\n  labeled: ['{sim_data}/micrographs/sim_0000.mrc']\n  coords: {sim_data}/coords\n  diameter: 24\n"
    )
    cfg = load_config(tmp_path / "cfg.yaml")
    assert cfg.campaign_dir == (tmp_path / "camp").resolve()
    assert resolve_data(cfg).labeled[0].name == "sim_0000.mrc"


def test_paths_checked_before_any_work(tmp_path: Path, sim_data: Path) -> None:
    base = {"out": str(tmp_path), **_data(sim_data)}
    with pytest.raises(CryopickError, match="data.unlabeled: .*no such micrograph file"):
        resolve_data(load_config(None, {**base, "data.unlabeled": [str(tmp_path / "missing.mrc")]}))
    with pytest.raises(CryopickError, match="data.coords: no such directory"):
        resolve_data(load_config(None, {**base, "data.coords": str(tmp_path / "nope")}))
    with pytest.raises(CryopickError, match="also listed in data.labeled"):
        resolve_data(load_config(None, {**base, "data.test": base["data.labeled"]}))
    (tmp_path / "lonely.mrc").write_bytes((sim_data / "micrographs" / "sim_0000.mrc").read_bytes())
    with pytest.raises(CryopickError, match="data.test: .*no coordinate file for micrograph lonely.mrc"):
        resolve_data(load_config(None, {**base, "data.test": [str(tmp_path / "lonely.mrc")]}))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "sim_0001.mrc").write_bytes((sim_data / "micrographs" / "sim_0001.mrc").read_bytes())
    with pytest.raises(CryopickError, match="two micrographs are named sim_0001"):
        resolve_data(load_config(None, {**base, "data.unlabeled": [*base["data.unlabeled"], str(tmp_path / "other" / "sim_0001.mrc")]}))
    data = resolve_data(load_config(None, base))
    assert len(data.labeled) == 1 and len(data.unlabeled) == 2 and len(data.test) == 1


def test_a_campaign_may_start_from_region_labels_alone(tmp_path: Path, sim_data: Path) -> None:
    """No data.labeled: refused, unless the campaign's labels/ holds labels; those micrographs then become the labeled
    set with their boxes; with no micrograph labeled whole no pick count is expected, so the threshold stays Tune's."""
    from cryopick.selftrain.labels import import_labels
    from cryopick.selftrain.scoring import ScoredHeatmap
    from cryopick.selftrain.stages import choose_threshold

    base = {"out": str(tmp_path / "camp"), **_data(sim_data), "data.labeled": []}
    with pytest.raises(CryopickError, match="data.labeled lists no micrographs"):
        resolve_data(load_config(None, base))
    unlabeled = [Path(p) for p in base["data.unlabeled"]]
    box = (0.0, 0.0, 128.0, 96.0)
    (label,) = import_labels(tmp_path / "camp", [sim_data / "coords" / f"{unlabeled[0].stem}.star"], unlabeled, boxes=[box])
    data = resolve_data(load_config(None, base))
    assert data.labeled == []
    assert data.take_labels({label.stem: label.path}, {label.stem: (box,)}) == [unlabeled[0].resolve()]
    assert data.boxes == {label.stem: (box,)} and data.complete == [] and len(data.unlabeled) == 1
    unseen = ScoredHeatmap("u", np.random.default_rng(0).random((64, 64)).astype(np.float32), (4.0, 4.0), np.zeros((0, 2)), (0, 64))
    best = {"threshold": 0.5, "min_distance": 12.0, "f1": 0.8, "precision": 0.8, "recall": 0.8, "n_picks": 10.0, "n_matched": 8.0}
    assert choose_threshold(best, [unseen], data) == (0.5, "")


def test_config_mismatch_allows_only_resumable_keys() -> None:
    a = {"train": {"steps": 5}, "selftrain": {"rounds": 2, "positive": 0.95}, "ray": {"num_workers": 2}}
    b = json.loads(json.dumps(a))
    b["selftrain"]["rounds"] = 4
    b["ray"]["num_workers"] = 8
    b["train"]["amp"] = False  # a campaign started before the key (or on other hardware) resumes in another precision
    b["predict"] = {"amp": None}  # ... and predicts in another (its default was false before it followed the hardware)
    assert config_mismatch(a, b) is None
    b["train"]["steps"] = 6
    assert config_mismatch(a, b) == "train.steps"
    assert flatten({"a": {"b": {"c": 1}}, "d": [1]}) == {"a.b.c": 1, "d": [1]}


def test_state_roundtrip_and_best_round(tmp_path: Path) -> None:
    st = CampaignState()
    st.record(0, val_f1=0.70, f1=0.60)
    st.record(1, val_f1=0.75, f1=0.66)
    st.record(2, val_f1=0.75, f1=0.70)  # a tie goes to the later round, as among checkpoints
    st.record(3, val_f1=0.74, f1=0.71)
    st.mlflow_parent_run_id = "abc"
    st.save(tmp_path)
    back = CampaignState.load(tmp_path)
    assert back.completed_rounds == [0, 1, 2, 3] and back.best_round == 2 and back.mlflow_parent_run_id == "abc"
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(CryopickError, match="unreadable campaign state"):
        CampaignState.load(tmp_path)


def test_completed_rounds_need_metrics_and_no_gap(tmp_path: Path) -> None:
    for r in (0, 1, 3):
        round_dir(tmp_path, r).mkdir()
        (round_dir(tmp_path, r) / "metrics.json").write_text("{}")
    round_dir(tmp_path, 4).mkdir()  # started, never finished
    assert completed_rounds_on_disk(tmp_path) == [0, 1]


def test_stop_reason() -> None:
    assert stop_reason([0.5], rounds=3, patience=1, min_improvement=0.0) is None
    assert stop_reason([0.5, 0.6], 3, 1, 0.0) is None
    assert "did not improve" in stop_reason([0.5, 0.6, 0.6], 5, 1, 0.0)
    assert stop_reason([0.5, 0.6, 0.6], 5, 2, 0.0) is None  # patience 2: one flat round is allowed
    assert "did not improve" in stop_reason([0.5, 0.52], 5, 1, 0.05)  # gain below min_improvement
    assert stop_reason([0.5, 0.6, 0.7], 3, 1, 0.0) == "reached 3 round(s)"
    # a saturated strip (every round 1.0) cannot show a gain: the campaign runs its rounds
    assert stop_reason([1.0, 1.0], 3, 1, 0.0) is None and stop_reason([0.9, 1.0, 1.0, 1.0], 5, 2, 0.0) is None
    assert stop_reason([1.0, 1.0, 1.0], 3, 1, 0.0) == "reached 3 round(s)"
    assert "did not improve on 0.9000" in stop_reason([0.9, 0.8], 3, 1, 0.0)


def test_too_few_pseudo_particles_is_relative_to_the_expert_share() -> None:
    # the EMPIAR-10017 round that lost F1: 0.014 % particle pixels against the expert labels' 3.4 %
    assert too_few_pseudo_particles(0.00014, 0.034, 0.1)
    assert not too_few_pseudo_particles(0.005, 0.034, 0.1)  # 15 % of the expert share: trains
    assert too_few_pseudo_particles(0.0, 0.034, 0.1)
    assert not too_few_pseudo_particles(0.0, 0.034, 0.0)  # 0 switches the rule off (the round trains on labels)
    assert not too_few_pseudo_particles(0.0, 0.0, 0.1)  # no expert share known: nothing to compare with


def test_campaign_stop_after_a_round_that_kept_the_previous_model(tmp_path: Path, sim_data: Path) -> None:
    cfg = load_config(None, {"out": str(tmp_path / "camp"), "selftrain.rounds": 5, "selftrain.patience": 3, **_data(sim_data)})
    history = [{"round": 0, "val_f1": 0.8}, {"round": 1, "val_f1": 0.8}]
    assert campaign_stop(history, cfg) is None
    history[-1]["stop"] = "too few pseudo-labels"
    assert campaign_stop(history, cfg) == "round 1: too few pseudo-labels"
    assert campaign_stop(history[:1] * 5, cfg) == "reached 5 round(s)"  # otherwise the plain rule


def test_patch_counts_keep_the_labeled_share() -> None:
    assert patch_counts(2, 0, 100, 0.5) == (50, 0)
    lab, ps = patch_counts(1, 10, 400, 0.5)
    assert lab == 200 and ps == 20  # one labeled micrograph still supplies half of every epoch
    assert patch_counts(1, 10, 400, 1.0) == (400, 0)
    with pytest.raises(ValueError):
        patch_counts(0, 3, 10, 0.5)


def test_cli_rejects_a_bad_config_before_ray(tmp_path: Path, sim_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryopick.cli.__main__ import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"data:\n  labeled: ['{sim_data}/micrographs/sim_0000.mrc']\n  coords: {sim_data}/coords\n"
                   "  diameter: 24\nselftrain:\n  roundz: 3\n")
    assert main(["selftrain", "--config", str(bad), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown config key selftrain.roundz" in err[0]
    assert main(["selftrain", "--config", str(bad).replace("bad", "none"), "--out", str(tmp_path / "c")]) == 2
    assert "no such config file" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # nothing written, no Ray started


def test_cli_demo_defaults_simulate_data(tmp_path: Path) -> None:
    import argparse

    from cryopick.cli import selftrain

    parser = argparse.ArgumentParser()
    selftrain.add_args(parser)
    args = parser.parse_args(["--out", str(tmp_path / "demo"), "--simulate", "4", "--rounds", "2", "--fresh"])
    cfg = selftrain.resolve_config(args)
    assert cfg.selftrain.rounds == 2 and cfg.selftrain.warm_start is False and cfg.model.base_width == 8
    data = resolve_data(cfg)
    assert len(data.labeled) == 1 and len(data.unlabeled) == 2 and len(data.test) == 1
    assert data.coords == (tmp_path / "demo" / "data" / "coords").resolve()


def test_round0_model_is_adopted_checked_and_its_overlap_reported(tmp_path: Path, sim_data: Path) -> None:
    import torch

    from cryopick.config import ModelConfig, PreprocessConfig
    from cryopick.model.unet import build_unet
    from cryopick.inference.picker import PickerMeta, load_picker, save_picker
    from cryopick.selftrain.reuse import adopt_picker

    data = _data(sim_data)
    run = tmp_path / "run"
    torch.manual_seed(3)
    model = build_unet(ModelConfig(base_width=4, depth=2))
    save_picker(run, model, PickerMeta(diameter=24.0, preprocess=PreprocessConfig(bin=2.0), model=ModelConfig(4, 2), threshold=0.4))
    trained = {"micrographs": data["data.labeled"], "val_micrographs": [], "train": {"val_fraction": 0.1}}
    (run / "config.json").write_text(json.dumps(trained))
    (run / "history.csv").write_text("step,loss\n10,0.5\n")
    base = {"out": str(tmp_path / "camp"), **data, "model.base_width": 4, "model.depth": 2, "preprocess.bin": 2.0,
            "train.val_fraction": 0.2, "selftrain.round0_model": str(run)}
    cfg = load_config(None, base)
    rdir = tmp_path / "camp" / "round_000"
    warnings = adopt_picker(run, rdir, cfg, border=12.5)
    # trained with a smaller strip held back than the campaign validates on: said so
    assert len(warnings) == 1 and "validation strips" in warnings[0]
    adopted, meta = load_picker(rdir)
    for a, b in zip(model.state_dict().values(), adopted.state_dict().values()):
        assert torch.equal(a, b)
    assert meta.border == 12.5 and meta.threshold == 0.4
    written = json.loads((rdir / "config.json").read_text())
    assert written["adopted_from"] == str(run.resolve()) and written["result"]["best_step"] == 0
    assert written["result"]["unpicked_prior"] is None
    assert (rdir / "history.csv").read_text() == "step,loss\n10,0.5\n"
    # a picker trained positive-unlabeled (--expected-particles) stays so: its round chooses the count threshold
    (run / "config.json").write_text(json.dumps({**trained, "result": {"unpicked_prior": 0.024}}))
    adopt_picker(run, tmp_path / "pu", cfg, border=12.5)
    assert json.loads((tmp_path / "pu" / "config.json").read_text())["result"]["unpicked_prior"] == 0.024
    # the same strip held back (or separate validation micrographs it never saw): no warning
    assert adopt_picker(run, tmp_path / "r2", load_config(None, {**base, "train.val_fraction": 0.1}), 0.0) == []
    # a picker of another width or binning is refused, naming the file and the setting
    with pytest.raises(CryopickError, match=r"round0_model: its model .*base_width"):
        adopt_picker(run, tmp_path / "r3", load_config(None, {**base, "model.base_width": 8}), 0.0)
    with pytest.raises(CryopickError, match=r"its preprocess"):
        adopt_picker(run / "model.pt", tmp_path / "r4", load_config(None, {**base, "preprocess.bin": 1.0}), 0.0)
    with pytest.raises(CryopickError, match=r"selftrain\.round0_model does not exist"):
        load_config(None, {**base, "selftrain.round0_model": str(tmp_path / "nope")})
    # the CLI flag sets the key
    import argparse

    from cryopick.cli import selftrain

    parser = argparse.ArgumentParser()
    selftrain.add_args(parser)
    args = parser.parse_args(["--out", str(tmp_path / "c"), "--round0-model", str(run), "--labeled", *data["data.labeled"],
                              "--coords", str(data["data.coords"]), "--diameter", "24"])
    assert selftrain.resolve_config(args).selftrain.round0_model == str(run)


def test_shipped_campaign_configs_load_and_full_gpu_is_the_full_model(empiar: Path, tmp_path: Path) -> None:
    """pipelines/configs: both self-training configs validate; the GPU one is the full U-Net on GPUs over EMPIAR-10017."""
    from cryopick.model.unet import build_unet, count_parameters

    configs = Path(__file__).resolve().parents[1] / "pipelines" / "configs"
    tiny = load_config(configs / "tiny_cpu.yaml", {"out": str(tmp_path / "tiny")})  # --out, as on the command line
    assert tiny.ray.use_gpu != "true" and tiny.model.base_width < 64
    full = load_config(configs / "full_gpu.yaml")
    assert count_parameters(build_unet(full.model)) == 31_042_369
    assert full.ray.use_gpu == "true" and full.ray.num_workers > 1
    split = json.loads((empiar / "split.json").read_text())
    data = resolve_data(full)  # relative paths resolve from the file's folder to the shared data set
    for role in ("labeled", "unlabeled", "test"):
        assert sorted(m.stem for m in getattr(data, role)) == sorted(split[role])


def test_a_campaign_has_at_most_53_settings_all_in_the_shipped_configs() -> None:
    from cryopick.config import to_dict
    from cryopick.selftrain.config import SelftrainConfig

    keys = set(flatten(to_dict(SelftrainConfig(out="x"))))
    assert len(keys) <= 53, sorted(keys)  # 51: selftrain.expected_particles; 52: selftrain.suggest; 53: train.amp
    configs = Path(__file__).resolve().parents[1] / "pipelines" / "configs"
    for name in ("tiny_cpu.yaml", "full_gpu.yaml"):
        text = (configs / name).read_text()
        # each setting appears as "key:" (commented-out examples count: data of your own in tiny_cpu), with a comment
        missing = [k for k in keys if not re.search(rf"^[#\s]*{re.escape(k.split('.')[-1])}:", text, re.M)]
        assert not missing, (name, missing)


@pytest.mark.parametrize(
    ("key", "value", "names"),
    [
        ("selftrain.calibrate", False, "selftrain.pseudo_rule"),
        ("selftrain.ignore_unsure_peaks", True, "selftrain.pseudo_rule"),
        ("tune.cpu_per_trial", 1.0, "ray.data_cpus"),
        ("pick", {"tta": 4}, "predict"),
        ("train.device", "cuda", "--device"),
        ("preprocess.lowpass_sigma", 1.0, "was removed"),
    ],
)
def test_old_keys_name_what_replaced_them(tmp_path: Path, key: str, value: object, names: str) -> None:
    with pytest.raises(CryopickError, match=rf"config key {re.escape(key)} .*{re.escape(names)}"):
        load_config(None, {"out": str(tmp_path), key: value})


def test_pseudo_rule_is_one_named_choice(tmp_path: Path, sim_data: Path) -> None:
    cfg = load_config(None, {"out": str(tmp_path), **_data(sim_data), "selftrain.pseudo_rule": "plain"})
    assert cfg.selftrain.pseudo_rule == "plain"
    with pytest.raises(CryopickError, match="selftrain.pseudo_rule must be one of calibrated, plain"):
        load_config(None, {"out": str(tmp_path), **_data(sim_data), "selftrain.pseudo_rule": "fancy"})
