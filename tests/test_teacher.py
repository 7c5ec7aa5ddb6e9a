"""Teacher–student pieces without Ray: the teacher's targets, its EMA, the student's strong view,
unlabeled and sparse rows of the training Dataset, and thresholds for sparse picks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cryopick.preprocessing.labels import HELD, IGNORE, UNPICKED
from cryopick.training.teacher import ema_update, make_teacher, strong_view, teacher_targets


class Constant(nn.Module):
    """A 'model' whose probability map is given: lets the thresholds be checked exactly."""

    def __init__(self, p: torch.Tensor) -> None:
        super().__init__()
        self.p = p
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.p


def test_teacher_fills_only_ignored_pixels_with_its_confident_labels() -> None:
    p = torch.tensor([0.99, 0.5, 0.01, 0.99, 0.01, 0.97]).reshape(1, 1, 2, 3)
    masks = torch.tensor([IGNORE, IGNORE, IGNORE, 0, 1, HELD], dtype=torch.int8).reshape(1, 1, 2, 3)
    out = teacher_targets(Constant(p), torch.zeros(1, 1, 2, 3), masks, 0.95, 0.05)
    # confident -> 1 / 0, unsure -> ignored; expert labels win over the teacher; held-back pixels stay held back
    assert out.flatten().tolist() == [1, IGNORE, 0, 0, 1, HELD]
    assert out.dtype == torch.int8


def test_ema_moves_the_teacher_towards_the_student_and_copies_batchnorm_statistics() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    teacher = make_teacher(student)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    before = [p.clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
        student[1].running_mean.fill_(3.0)
    ema_update(teacher, student, 0.75)
    for t, b, s in zip(teacher.parameters(), before, student.parameters()):
        assert torch.allclose(t, 0.75 * b + 0.25 * s)
    assert torch.equal(teacher[1].running_mean, student[1].running_mean)
    ema_update(teacher, student, 0.0)  # decay 0: the teacher is the student
    assert all(torch.equal(t, s) for t, s in zip(teacher.parameters(), student.parameters()))


def test_strong_view_perturbs_images_and_ignores_what_the_cut_out_hides() -> None:
    torch.manual_seed(1)
    images = torch.randn(6, 1, 32, 32)
    masks = torch.zeros(6, 1, 32, 32, dtype=torch.int8)
    a, ma = strong_view(images, masks, torch.Generator().manual_seed(5))
    b, mb = strong_view(images, masks, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.equal(ma, mb)  # reproducible from the generator
    assert a.shape == images.shape and ma.shape == masks.shape and not torch.allclose(a, images)
    hidden = ma == IGNORE
    side = 8  # a quarter of the patch edge
    assert (hidden.flatten(1).sum(1) == side * side).all()  # one square per patch
    assert (a[hidden] == 0).all() and (masks == 0).all()  # the input masks are not modified
    same, msame = strong_view(images, masks, torch.Generator(), strength=0.0)
    assert same is images and msame is masks


@pytest.mark.parametrize("amp", [True, False])
def test_the_teacher_labels_in_the_precision_the_student_trains_in(amp: bool) -> None:
    """A round's teacher forward pass runs under the round's ``train.amp`` (bfloat16 autocast), as the student's does."""
    from cryopick.distributed.train_loop import _teach
    from cryopick.training.teacher import TeacherConfig

    torch.manual_seed(0)
    teacher = make_teacher(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Sigmoid()))
    seen: list[torch.dtype] = []
    teacher[0].register_forward_hook(lambda module, inputs, out: seen.append(out.dtype))
    images = torch.randn(2, 1, 16, 16)
    masks = torch.full((2, 1, 16, 16), IGNORE, dtype=torch.int8)
    masks[0] = 0  # an expert-labeled patch: the teacher is not asked about it
    taught = np.zeros(3)
    out, filled = _teach(teacher, images, masks, TeacherConfig(strength=0.0), torch.Generator().manual_seed(0), taught, amp)
    assert seen == [torch.bfloat16 if amp else torch.float32]
    assert taught[2] == 16 * 16 and torch.equal(filled[0], masks[0]) and out.dtype == torch.float32


def test_unlabeled_rows_become_fully_ignored_patches_and_sparse_rows_leave_background_to_the_teacher(
    empiar: Path, split: dict[str, list[str]]) -> None:
    from dataclasses import asdict

    from cryopick.config import PreprocessConfig
    from cryopick.distributed.data import LABELED, UNLABELED, StageParams, cut_patches, load_micrographs

    m = split["labeled"][0]
    params = asdict(StageParams(diameter=27.0, preprocess=asdict(PreprocessConfig(bin=4.0)), val_fraction=0.25, pseudo={},
                                sparse=True))
    batch = {"path": np.array([str(empiar / "micrographs" / f"{m}.mrc")] * 2), "kind": np.array([LABELED, UNLABELED]),
             "label": np.array([str(empiar / "coords" / f"{m}.star"), ""]), "n_patches": np.array([3, 4]),
             "hold_back": np.array([True, False])}
    out = load_micrographs(batch, params)
    sparse, unlabeled = out["mask"][0], out["mask"][1]
    assert set(np.unique(sparse)) == {HELD, IGNORE, 1}  # picked disks, held-back strip, the rest for the teacher
    h = sparse.shape[0]
    assert (sparse[h - h // 4 + 1:] == HELD).all()
    assert (unlabeled == IGNORE).all() and list(out["kind"]) == [LABELED, UNLABELED]
    patches = cut_patches(out, 32, seed=0, intensity=1.0)
    names = list(patches["name"])
    assert names.count(m) == 7  # both rows keep their patches, the fully ignored one too
    assert (patches["mask"][3:] == IGNORE).all()
    params["prior"] = 0.1  # the share of particles among the unpicked pixels is known: they are positive-unlabeled
    pu = load_micrographs(batch, params)["mask"][0]
    assert set(np.unique(pu)) == {HELD, UNPICKED, 1} and ((pu == UNPICKED) == (sparse == IGNORE)).all()


def _trials(n_particles: int, picked: float) -> list[dict[str, float]]:
    """Tune trials of a model that finds particles in score order, then false picks, against sparse picks."""
    rows = []
    k = n_particles / 100
    for t, (tp, fp) in zip((0.9, 0.7, 0.5, 0.3, 0.1), ((50 * k, 0), (80 * k, 4 * k), (95 * k, 20 * k), (100 * k, 60 * k), (100 * k, 200 * k))):
        n_picks = tp + fp
        matched = tp * picked  # a random share of the particles is picked
        recall = tp / n_particles
        rows.append({"threshold": t, "min_distance": 10.0, "n_picks": float(n_picks), "n_matched": matched,
                     "recall": recall, "precision": matched / n_picks, "f1": 2 * recall * (matched / n_picks) / (recall + matched / n_picks)})
    return rows


def test_sparse_picks_are_recognised_and_their_threshold_is_the_complete_picks_one() -> None:
    from cryopick.selftrain.scoring import best_trial, estimated_particles, picked_share, sparse_trials

    complete, sparse = _trials(1000, 1.0), _trials(1000, 0.2)
    assert picked_share(complete, z=0.0) == pytest.approx(1.0) and picked_share(sparse, z=0.0) == pytest.approx(0.2)
    # the count errs towards more particles, by the Wilson bound of the picked share (200 picks here)
    assert estimated_particles(complete) == pytest.approx(1000, rel=0.02) and 1000 < estimated_particles(sparse) < 1300
    assert picked_share(sparse) == pytest.approx(1000 * 0.2 / estimated_particles(sparse))
    plain = best_trial(sparse)["threshold"]
    fixed = best_trial(sparse_trials(sparse))["threshold"]
    truth = best_trial(complete)["threshold"]
    assert plain > truth and fixed == truth == 0.5  # against sparse picks every unpicked particle looked like a false pick
    # rescored precision: the complete picks' one, scaled by the estimated count's excess
    over = estimated_particles(sparse) / 1000
    assert sparse_trials(sparse)[2]["precision"] == pytest.approx(min(1.0, complete[2]["precision"] * over))
    few = [dict(t, n_matched=2.0) for t in sparse]  # too few matches to estimate anything, even bounded: trials unchanged
    assert picked_share(few) == 1.0 and sparse_trials(few) == few


def test_a_campaign_judges_a_few_sparse_strip_picks_sparse_by_the_bounded_share() -> None:
    """Eight of 34 particles picked on the strips: no setting reaches 10 matches, so the plain share that
    campaigns judge on is not defined; the bounded share over 3 matches judges the picks sparse."""
    from cryopick.evaluation.metrics import SPARSE_SHARE
    from cryopick.selftrain.scoring import judged_share, picked_share

    few = _trials(34, 8 / 34)
    assert max(t["n_matched"] for t in few) < 10 and picked_share(few, z=0.0) == 1.0
    assert judged_share(few) < SPARSE_SHARE
    many = _trials(1000, 0.2)
    assert judged_share(many) == picked_share(many, z=0.0) == pytest.approx(0.2)
    assert judged_share(_trials(1000, 1.0)) == pytest.approx(1.0)


def test_with_two_strip_picks_the_models_probability_at_them_judges() -> None:
    """Two picks on the strips, one matched: the matches cannot tell (1.0 was judged complete); the model's mean
    peak at the picks can. The larger reading decides, so a poor model on complete picks stays complete."""
    from cryopick.evaluation.metrics import SPARSE_SHARE
    from cryopick.selftrain.scoring import judged_share

    two = [dict(t, n_matched=min(1.0, t["n_matched"]), recall=0.5) for t in _trials(34, 0.1)]
    assert judged_share(two) == 1.0  # no reading at all: complete, as before
    assert SPARSE_SHARE > judged_share(two, 0.23) == pytest.approx(0.23)  # a tenth of the picks (EMPIAR-10028, round 0)
    assert judged_share(two, 0.9) == pytest.approx(0.9)
    assert judged_share(_trials(1000, 1.0), 0.3) == pytest.approx(1.0)  # precise at its top: complete
    assert judged_share(_trials(1000, 0.2), 0.25) == pytest.approx(0.25)


def test_cryopick_train_and_campaigns_say_sparse_in_one_message() -> None:
    from cryopick.evaluation.metrics import sparse_note
    from cryopick.selftrain import stages

    note = stages.sparse_note(0.23)
    assert note == sparse_note(0.23, "unpicked areas are left to the teacher and the threshold is set for sparse picks")
    assert note.startswith("the expert picks look sparse") and "about 23% of the particles" in note
    assert note.endswith("(--labels complete if every particle was picked)")


def test_at_picks_reads_the_heatmap_at_the_strip_picks(tmp_path: Path) -> None:
    from cryopick.selftrain.scoring import at_picks, load_heatmap

    heat = np.full((64, 64), 0.05, dtype=np.float32)
    heat[10, 10], heat[50, 20], heat[52, 40] = 0.9, 0.2, 0.3  # a pick above the strip; two on it
    np.savez(tmp_path / "m.npz", heatmap=heat, scale=np.array([2.0, 2.0]))
    truth = np.array([[20.0, 20.0], [41.0, 100.0], [80.0, 104.0]])  # ORIGINAL px (binned 2x)
    sh = load_heatmap(tmp_path / "m.npz", truth, rows=(40, 64))
    assert at_picks([sh], diameter=8.0) == pytest.approx(0.25)  # the strip's two picks, within a quarter diameter
    assert at_picks([load_heatmap(tmp_path / "m.npz", np.zeros((0, 2)), rows=(40, 64))], diameter=8.0) is None


def test_a_pr_curve_against_sparse_picks_is_rescored_to_the_complete_picks_threshold() -> None:
    """`cryopick train --labels sparse`: the curve's precision against the estimated particle count."""
    from cryopick.evaluation.metrics import PRCurve, best_threshold, for_sparse_picks, picked_share

    rng = np.random.default_rng(0)
    n = 200  # particles; the model ranks 180 of them first (with 10 false picks among them), then 300 false picks
    is_particle = np.r_[np.ones(90), np.zeros(5), np.ones(90), np.zeros(5), np.zeros(300)].astype(bool)
    scores = np.linspace(1.0, 0.01, len(is_particle))
    for share in (1.0, 0.2):
        picked = is_particle & (rng.random(len(is_particle)) < share)
        n_true = int(round(share * n))
        tp = np.cumsum(picked)
        curve = PRCurve(scores, tp / np.arange(1, len(tp) + 1), tp / n_true, tp, n_true)
        assert picked_share(curve, z=0.0) == pytest.approx(share, abs=0.12)
        _, thr = best_threshold(for_sparse_picks(curve) if share < 1 else curve)
        assert scores[190] - 0.02 <= thr <= scores[170] + 0.02  # where the particles end, for both
    # against 20 % of the picks the plain precision at the particles' end is about 0.2 x the true one; rescored, it is the true one
    assert curve.precision[189] == pytest.approx(0.2 * 180 / 190, abs=0.05)
    assert for_sparse_picks(curve).precision[189] == pytest.approx(180 / 190, abs=0.1)


def test_the_particle_count_of_sparse_picks_is_not_undercounted_by_a_lucky_setting() -> None:
    """The largest of many noisy matched shares is a lucky one, so the plain estimate (z = 0) counts too few
    particles at 10 % of the picks; bounded by Wilson first (the default z), the count errs towards more."""
    from cryopick.evaluation.metrics import SPARSE_Z, curve_from_hits, estimated_count

    rng = np.random.default_rng(0)
    n = 600  # particles, scored above most of the 1,800 false candidates
    ratios: dict[float, list[float]] = {0.0: [], SPARSE_Z: []}
    for _ in range(100):
        scores = np.r_[rng.beta(5, 2, n), rng.beta(1, 6, 3 * n)]
        picked = np.r_[np.ones(n, bool), np.zeros(3 * n, bool)] & (rng.random(4 * n) < 0.1)
        curve = curve_from_hits(scores, picked, int(picked.sum()))
        for z, out in ratios.items():
            out.append(estimated_count(np.arange(1, len(curve.tp) + 1), curve.tp, curve.recall, z) / n)
    assert np.mean(ratios[0.0]) < 0.9
    assert 1.0 <= np.mean(ratios[SPARSE_Z]) < 1.35


def test_a_few_sparse_picks_still_give_a_count_that_errs_towards_more_particles() -> None:
    """Eight picks on the validation strips (of about 34 particles): too few matches for the plain share, whose
    curve then stays as it was; the Wilson-bounded share falls back to settings with 3 matches."""
    from cryopick.evaluation.metrics import SPARSE_MIN_MATCHED, PRCurve, estimated_count, for_sparse_picks

    is_particle = np.r_[np.ones(30), np.zeros(2), np.ones(4), np.zeros(60)].astype(bool)
    picked = np.zeros(len(is_particle), bool)
    picked[[0, 3, 7, 12, 18, 22, 27, 33]] = True  # 8 of the 34 particles
    tp = np.cumsum(picked)
    k = np.arange(1, len(tp) + 1)
    curve = PRCurve(np.linspace(1.0, 0.01, len(k)), tp / k, tp / 8, tp, 8)
    assert tp[-1] < SPARSE_MIN_MATCHED and estimated_count(k, tp, curve.recall, z=0.0) == 0.0
    count = estimated_count(k, tp, curve.recall)
    assert 34 <= count < 34 * 3
    assert not np.array_equal(for_sparse_picks(curve).precision, curve.precision)


def test_sparse_picks_with_the_users_particle_count_put_the_threshold_where_the_particles_end() -> None:
    """`cryopick train --expected-particles`: the count in the scored area is known, so the curve is rescored
    against it rather than against a count estimated from eight picks."""
    from cryopick.evaluation.metrics import PRCurve, best_threshold, for_sparse_picks

    is_particle = np.r_[np.ones(30), np.zeros(2), np.ones(4), np.zeros(60)].astype(bool)
    picked = np.zeros(len(is_particle), bool)
    picked[[0, 3, 7, 12, 18, 22, 27, 33]] = True  # 8 of the 34 particles
    tp = np.cumsum(picked)
    k = np.arange(1, len(tp) + 1)
    scores = np.linspace(1.0, 0.01, len(k))
    curve = PRCurve(scores, tp / k, tp / 8, tp, 8)
    rescored = for_sparse_picks(curve, count=34.0)
    assert rescored.precision[33] == pytest.approx(1.0)  # 34 picks, recall 1: every particle found
    assert rescored.precision[-1] == pytest.approx(34 / len(k))
    _, thr = best_threshold(rescored)
    assert thr == pytest.approx(scores[33])
    _, plain = best_threshold(curve)
    assert plain > scores[30]  # against the eight picks alone it stops before the particles end
