"""The decisions between a round's stages, run without Ray (cryopick.selftrain.stages)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cryopick.preprocessing.labels import MAX_PRIOR
from cryopick.selftrain import stages
from cryopick.selftrain.config import ResolvedData, load_config, resolve_data
from cryopick.selftrain.pseudo import PseudoLabeler
from cryopick.selftrain.scoring import RoundScore, ScoredHeatmap
from cryopick.evaluation.metrics import PRCurve
from cryopick.io.coords import Box


def _cfg(tmp_path: Path, sim: Path, **over: object) -> object:
    split = json.loads((sim / "split.json").read_text())
    mic = lambda names: [str(sim / "micrographs" / f"{n}.mrc") for n in names]  # noqa: E731
    return load_config(None, {"out": str(tmp_path / "camp"), "data.labeled": mic(split["labeled"]),
                              "data.unlabeled": mic(split["unlabeled"]), "data.test": mic(split["test"]),
                              "data.coords": str(sim / "coords"), "data.diameter": 24.0, **over})


def test_round_labeler_takes_the_previous_rounds_tables_and_the_rule(tmp_path: Path, sim_data: Path) -> None:
    cfg = _cfg(tmp_path, sim_data)
    prev = tmp_path / "round_000"
    prev.mkdir()
    (prev / stages.CALIBRATION_FILE).write_text(json.dumps({"pixel": [0.1] * 50, "peak": [0.9] * 50, "min_distance": 12.0,
                                                             "positive_share": 0.07}))
    lab = stages.round_labeler(cfg, prev)
    assert (lab.rule, lab.balance_to, lab.min_distance_fraction, lab.peak_calibration[0]) == ("calibrated", 0.07, 0.5, 0.9)
    plain = stages.round_labeler(_cfg(tmp_path, sim_data, **{"selftrain.pseudo_rule": "plain"}), prev)
    assert plain.rule == "plain" and plain.balance_to == 0.0  # the bare rule: no class balance either


def test_too_few_pseudo_particles_stop_the_round(tmp_path: Path, sim_data: Path) -> None:
    cfg = _cfg(tmp_path, sim_data)
    prev = tmp_path / "round_000"
    prev.mkdir()
    (prev / stages.CALIBRATION_FILE).write_text(json.dumps({"positive_share": 0.07}))
    unlabeled = [Path(m) for m in cfg.data.unlabeled]
    rows = [{"name": m.stem, "npz": str(tmp_path / f"{m.stem}.npz"), "positive": p, "negative": 0.5, "ignored": 0.5 - p,
             "pixels": 100.0} for m, p in zip(unlabeled, (0.0001, 0.0))]
    out = stages.judge_pseudo_labels(rows, PseudoLabeler(), unlabeled, prev, cfg, 1)
    assert out.stop and "min_pseudo_share" in out.stop and out.note == out.stop
    assert [m for m, _ in out.pairs] == unlabeled
    rows[0]["positive"] = 0.05
    ok = stages.judge_pseudo_labels(rows, PseudoLabeler(), unlabeled, prev, cfg, 1)
    assert not ok.stop and ok.note == "" and ok.stats["positive"] == pytest.approx(0.025)


def test_scored_micrographs_and_the_count_matched_threshold(tmp_path: Path, sim_data: Path) -> None:
    cfg = _cfg(tmp_path, sim_data)
    data = resolve_data(cfg)
    val, count, scored = stages.scored_micrographs(cfg, data)
    assert val == data.labeled and count == data.unlabeled[:5] and set(scored) == {*val, *data.test, *count}
    hm = np.zeros((64, 64), np.float32)
    for i, (x, y) in enumerate([(10, 10), (30, 10), (50, 10), (10, 40), (30, 40)]):
        hm[y, x] = 0.9 - 0.1 * i
    item = ScoredHeatmap("u", hm, (4.0, 4.0), np.zeros((0, 2)), (0, 64))
    best = {"threshold": 0.5, "min_distance": 12.0, "f1": 0.8, "precision": 0.5, "recall": 1.0}  # 2 picks per particle
    threshold, note = stages.choose_threshold(best, [item], data)
    assert 0.0 < threshold < 0.5 and "picks per expected particle" in note
    assert stages.choose_threshold(best, [], data) == (0.5, "")  # separate validation micrographs: Tune's threshold
    # sparse picks: one pick per expected particle (density / share), whatever Tune's best setting kept per pick
    area = 256 * 256
    k = max(1, round(stages.expert_density(data) / 0.02 * area))
    sparse_thr, sparse_note = stages.choose_threshold(best, [item], data, share=0.02, sparse=True)
    assert f"the {k}th best peak" in sparse_note and "one pick per particle" in sparse_note
    assert sparse_thr == (0.9 - 0.1 * (k - 1) if k <= 5 else stages.CANDIDATE_FLOOR)
    # sparse picks and a confident model: the threshold parts the unlabeled peaks' two populations, whatever the share
    two = np.zeros((240, 240), np.float32)
    for i, (x, y) in enumerate((12 + 24 * (i % 10), 12 + 24 * (i // 10)) for i in range(100)):
        two[y - 2:y + 3, x - 2:x + 3] = 0.95 if i % 3 == 0 else 0.06  # 34 particles, 66 background peaks
    mixed = ScoredHeatmap("u", two, (1.0, 1.0), np.zeros((0, 2)), (0, 240))
    for share in (0.02, 0.5):
        t, why = stages.choose_threshold(best, [mixed], data, share=share, sparse=True)
        assert 0.06 < t < 0.95 and "part into particles" in why
    asked: list[int] = []  # an estimated share is only worked out where the count is used

    def estimate() -> float:
        asked.append(1)
        return 0.02

    assert "part into particles" in stages.choose_threshold(best, [mixed], data, share=estimate, sparse=True)[1] and not asked
    assert stages.choose_threshold(best, [item], data, share=estimate, sparse=True) == (sparse_thr, sparse_note) and asked
    assert "picks per expected particle" in stages.choose_threshold(best, [mixed], data)[1]  # complete picks: the count
    # a positive-unlabeled round 0 with the user's share: the count of expected particles, not the mixture
    t, why = stages.choose_threshold(best, [mixed], data, share=0.5, sparse=True, mixture=False)
    assert "one pick per particle" in why and "part into" not in why


def _ranked_strip(picked: list[int], n: int = 40) -> ScoredHeatmap:
    """A strip of ``n`` well-separated peaks scored 0.95, 0.94, ... by rank, with expert picks at the ranks ``picked``."""
    hm = np.zeros((200, 200), np.float32)
    xy = np.array([(10 + 20 * (i % 8) + 0.0, 10 + 20 * (i // 8) + 0.0) for i in range(n)])
    for i, (x, y) in enumerate(xy):
        hm[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = 0.95 - 0.01 * i
    return ScoredHeatmap("v", hm, (1.0, 1.0), xy[picked], (0, 200))


def test_sparse_share_reads_the_whole_ranking_and_falls_back_with_few_matches() -> None:
    half = _ranked_strip(list(range(0, 40, 2)))  # every other peak picked: matched share 1/2 from the top down
    share = stages.sparse_share([half], 10.0, 10.0, fallback=0.123)
    assert 0.5 <= share <= 10 / 19 + 1e-9  # the largest share over cut points with >= 10 matches (10 of the top 19)
    top = _ranked_strip(list(range(20)))  # the 20 best peaks picked: all particles the model ranks first are picked
    assert stages.sparse_share([top], 10.0, 10.0, fallback=0.123) == 0.123  # share 1: nothing sparse to estimate
    few = _ranked_strip([0, 5, 10])  # 3 matches: too few for a share
    assert stages.sparse_share([few], 10.0, 10.0, fallback=0.123) == 0.123


def test_later_rounds_judge_and_count_on_round_zeros_share(tmp_path: Path, sim_data: Path) -> None:
    """Round 0 alone learned the unpicked areas as background, so its judged share (the peaks at the picks where
    matches are too few) decides sparseness and is the count's last fallback in every later round."""
    camp = tmp_path / "camp"
    (camp / "round_000").mkdir(parents=True)
    (camp / "round_000" / stages.CALIBRATION_FILE).write_text(json.dumps({"picked_share": 0.23}))
    assert stages.judged_share_of_round0(camp) == 0.23
    cfg = _cfg(tmp_path, sim_data)
    data = resolve_data(cfg)
    assert stages.sparse_labels(cfg, camp, data) is True
    assert stages.sparse_labels(cfg, camp, data, share=0.8) is False
    assert stages.sparse_labels(_cfg(tmp_path, sim_data, **{"selftrain.labels": "complete"}), camp, data) is False
    (camp / "round_000" / stages.CALIBRATION_FILE).write_text(json.dumps({}))
    assert stages.judged_share_of_round0(camp) == 1.0


def test_region_labels_are_never_judged_sparse(tmp_path: Path, sim_data: Path) -> None:
    """A region is labeled completely inside: with every labeled micrograph labeled in regions only, auto keeps the
    picks complete whatever round 0 judged (a weak round 0's false peaks read as unpicked particles); a whole
    micrograph among them brings the judgement back, and an explicit setting still wins."""
    camp = tmp_path / "camp"
    (camp / "round_000").mkdir(parents=True)
    (camp / "round_000" / stages.CALIBRATION_FILE).write_text(json.dumps({"picked_share": 0.23}))
    cfg = _cfg(tmp_path, sim_data)
    data = resolve_data(cfg)
    data.boxes = {m.stem: (Box(0, 0, 64, 64),) for m in data.labeled}
    assert data.regions_only and stages.sparse_labels(cfg, camp, data) is False
    assert stages.sparse_labels(cfg, camp, data, share=0.1) is False
    assert stages.sparse_labels(_cfg(tmp_path, sim_data, **{"selftrain.labels": "sparse"}), camp, data) is True
    data.boxes.pop(data.labeled[0].stem)
    assert not data.regions_only and stages.sparse_labels(cfg, camp, data) is True


def test_few_validation_picks_leave_the_peak_distance_to_the_default() -> None:
    """Three picks on the strips tie F1 across distances and the tie-break would take the largest: the round
    chooses among the trials at the default distance instead; with enough picks every trial stays."""
    trials = [{"threshold": t, "min_distance": md, "f1": 0.5, "recall": 0.5, "precision": 0.5}
              for t in (0.3, 0.6) for md in (0.3 * 56, 0.5 * 56, 0.75 * 56, 56.0)]
    strip = lambda n: ScoredHeatmap("v", np.zeros((64, 64), np.float32), (4.0, 4.0),  # noqa: E731
                                    np.array([(10.0 + 20 * i, 10.0) for i in range(n)]), (0, 64))
    few, why = stages.distance_trials(trials, [strip(3)], 56.0)
    assert {t["min_distance"] for t in few} == {0.5 * 56} and len(few) == 2 and "3 validation pick(s)" in why
    assert stages.distance_trials(trials, [strip(6), strip(6)], 56.0) == (trials, "")


def test_expected_particles_give_the_picked_share_and_the_unpicked_prior(tmp_path: Path, sim_data: Path) -> None:
    """The user's particles per micrograph make the share known before round 0: picks per labeled micrograph
    over the expected count, and from it the share of the unpicked pixels that lie on a particle's label disk."""
    data = resolve_data(_cfg(tmp_path, sim_data))
    assert stages.expected_share(_cfg(tmp_path, sim_data), data) is None
    picks = sum(len(xy) for xy, _ in stages.expert_labels(data)) / len(data.complete)
    cfg = _cfg(tmp_path, sim_data, **{"selftrain.expected_particles": 4 * picks})
    share = stages.expected_share(cfg, data)
    assert share == pytest.approx(0.25)
    assert stages.expected_share(_cfg(tmp_path, sim_data, **{"selftrain.expected_particles": picks / 2}), data) == 1.0
    d = stages.expert_density(data) * np.pi * (0.35 * 24.0 / 2) ** 2
    assert stages.unpicked_prior(data, 24.0, share) == pytest.approx(d * 3 / (1 - d))
    assert stages.unpicked_prior(data, 24.0, 1.0) == 0.0
    assert stages.unpicked_prior(data, 24.0, 1e-6) == MAX_PRIOR
    with pytest.raises(Exception, match="expected_particles must be > 0"):
        _cfg(tmp_path, sim_data, **{"selftrain.expected_particles": 0})


def test_round_metrics_hold_what_the_contract_lists(tmp_path: Path, sim_data: Path) -> None:
    curve = PRCurve(np.array([0.9]), np.array([1.0]), np.array([0.5]), np.array([1]), 2)
    score = RoundScore(1.0, 0.5, 0.667, 0.5, 1, curve)
    best = {"threshold": 0.3, "min_distance": 12.0, "f1": 0.7}
    m = stages.round_metrics(2, score, best, 0.4, None, {"final_loss": 0.1}, {"time_train_s": 1.0})
    for key in ("precision", "recall", "f1", "average_precision", "threshold", "val_threshold", "min_distance", "train_loss",
                "val_f1", "n_picks", "pseudo_positive", "pseudo_negative", "pseudo_ignored", "time_train_s"):
        assert key in m, key
    assert (m["round"], m["threshold"], m["val_threshold"], m["pseudo_positive"]) == (2, 0.3, 0.4, 0.0)


def test_the_teacher_gets_the_campaign_binning_from_a_factor_or_a_target_pixel_size(tmp_path: Path) -> None:
    from cryopick.io.micrograph import write_mrc
    from cryopick.selftrain.config import load_config, resolve_data
    from cryopick.selftrain.stages import bin_of

    mic = tmp_path / "m.mrc"
    write_mrc(mic, np.zeros((64, 64), np.float32), 1.5)
    (tmp_path / "m.star").write_text("data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n10 10\n")
    base = {"data.labeled": [str(mic)], "data.coords": str(tmp_path), "data.diameter": 28.0, "out": str(tmp_path / "c")}
    cfg = load_config(None, base)
    assert bin_of(cfg, resolve_data(cfg)) == pytest.approx(1.4)  # 28 px / the 20-px target
    cfg = load_config(None, {**base, "preprocess.target_pixel_size": 4.5})
    assert bin_of(cfg, resolve_data(cfg)) == pytest.approx(3.0)  # 4.5 Å/px from the header's 1.5


def test_a_campaign_begun_before_teacher_rounds_resumes_only_as_it_began(tmp_path: Path) -> None:
    """Its campaign.json has no selftrain.method / labels and still a min_improvement: the default refuses with the
    way out in the message; --method offline --labels complete resumes it."""
    from cryopick.errors import CryopickError
    from cryopick.io.micrograph import write_mrc

    mic = tmp_path / "m.mrc"
    write_mrc(mic, np.zeros((64, 64), np.float32), 1.5)
    (tmp_path / "m.star").write_text("data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n10 10\n")
    base = {"data.labeled": [str(mic)], "data.coords": str(tmp_path), "data.diameter": 28.0, "out": str(tmp_path / "c")}
    cfg = load_config(None, base)
    camp = stages.prepare_campaign(cfg, resolve_data(cfg))
    old = json.loads((camp / "campaign.json").read_text())
    del old["selftrain"]["method"], old["selftrain"]["labels"]
    old["selftrain"]["min_improvement"] = 0.0
    (camp / "campaign.json").write_text(json.dumps(old))
    with pytest.raises(CryopickError, match=r"selftrain\.(labels|method) differs.*--method offline --labels complete"):
        stages.prepare_campaign(cfg, resolve_data(cfg))
    legacy = load_config(None, {**base, "selftrain.method": "offline", "selftrain.labels": "complete"})
    stages.prepare_campaign(legacy, resolve_data(legacy))  # resumes


def test_new_expert_labels_lift_the_warm_start_floor(tmp_path: Path, sim_data: Path) -> None:
    from cryopick.io.coords import Box, read_coords
    from cryopick.training.dataset import coords_for
    from cryopick.selftrain.labels import write_label

    cfg = _cfg(tmp_path, sim_data)
    data = resolve_data(cfg)
    prev = tmp_path / "round_000"
    prev.mkdir()
    (prev / "config.json").write_text(json.dumps({"labeled": [str(m) for m in data.labeled],
                                                  "labels_sha256": stages.labels_digest(data)}))
    assert not stages.labels_changed(prev, data)  # same labels: the warm start stays the floor
    assert stages.warm_start_floor(prev, data, sparse=False) == (True, "")
    floor, why = stages.warm_start_floor(prev, data, sparse=True)  # sparse picks on the strips: an ordinary checkpoint
    assert not floor and "sparse" in why
    mic = data.unlabeled[0]
    xy = read_coords(coords_for(mic, sim_data / "coords"))[0]

    def with_region(box: Box) -> ResolvedData:
        write_label(Path(cfg.out), mic, xy, "test", replace=True, boxes=[box])
        new = resolve_data(cfg)
        new.take_campaign_labels(Path(cfg.out))
        return new

    one = with_region(Box(0, 0, 128, 128))
    assert stages.labels_changed(prev, one)  # a micrograph labeled since
    assert stages.warm_start_floor(prev, one, sparse=False) == (False, "expert labels changed since the warm start's round")
    (prev / "config.json").write_text(json.dumps({"labels_sha256": stages.labels_digest(one)}))
    assert not stages.labels_changed(prev, one)
    assert stages.labels_changed(prev, with_region(Box(0, 0, 128, 256)))  # the same micrograph, a larger region
    # a round recorded before the digest: compared by its labeled micrographs
    (prev / "config.json").write_text(json.dumps({"labeled": [str(m) for m in data.labeled]}))
    assert not stages.labels_changed(prev, data) and stages.labels_changed(prev, one)
