"""Masks, the masked BCE on hand-made cases, and the U-Net's shapes and parameter count."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryopick.config import ModelConfig
from cryopick.preprocessing.labels import HELD, IGNORE, UNPICKED, circle_mask, mask_coverage, pseudo_label_mask
from cryopick.training.loss import masked_bce
from cryopick.model.unet import build_unet, count_parameters


def test_circle_mask_matches_the_definition() -> None:
    mask = circle_mask((20, 30), np.array([[10.0, 8.0]]), radius=3.0)
    yy, xx = np.mgrid[:20, :30]
    expected = ((xx - 10.0) ** 2 + (yy - 8.0) ** 2 <= 9.0).astype(np.int8)
    np.testing.assert_array_equal(mask, expected)
    assert mask.sum() == 29  # lattice points in a disk of radius 3


def test_circle_mask_subpixel_and_clipped_at_edges() -> None:
    mask = circle_mask((10, 10), np.array([[0.5, 0.5], [9.0, 9.0]]), radius=1.0)
    # (0.5, 0.5): the four pixels at distance sqrt(0.5) < 1; (9, 9): a corner keeps 3 of its 5 pixels.
    assert mask[:2, :2].sum() == 4 and mask[8:, 8:].sum() == 3 and mask.sum() == 7
    assert circle_mask((5, 5), np.zeros((0, 2)), 2.0).sum() == 0


def test_pseudo_labels_and_coverage() -> None:
    prob = np.array([[0.99, 0.96, 0.95, 0.5], [0.05, 0.04, 0.0, 1.0]])
    mask = pseudo_label_mask(prob)
    np.testing.assert_array_equal(mask, [[1, 1, IGNORE, IGNORE], [IGNORE, 0, 0, 1]])
    cov = mask_coverage(mask)
    assert cov == {"positive": 3 / 8, "negative": 2 / 8, "ignored": 3 / 8}
    with pytest.raises(ValueError):
        pseudo_label_mask(prob, positive=0.1, negative=0.2)


def test_masked_bce_hand_case() -> None:
    p = torch.tensor([0.9, 0.2, 0.7, 0.5])
    logits = torch.log(p / (1 - p))
    target = torch.tensor([1, 0, IGNORE, 1])
    # mean over the three valid pixels of -log p (positives) and -log(1-p) (negative)
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.5)) / 3
    assert masked_bce(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # pos_weight multiplies the positive terms; the average stays over valid pixels
    weighted = -(2 * math.log(0.9) + math.log(0.8) + 2 * math.log(0.5)) / 3
    assert masked_bce(logits, target, pos_weight=2.0).item() == pytest.approx(weighted, rel=1e-6)


def test_background_the_model_calls_particle_is_left_out() -> None:
    """With ``confident`` a background pixel scored above it adds nothing (an unpicked particle, likely); particle
    pixels and less confident background count as before, and the result is the plain loss over the rest."""
    p = torch.tensor([0.97, 0.97, 0.2, 0.9])
    logits = torch.log(p / (1 - p)).requires_grad_()
    target = torch.tensor([0, 1, 0, 0])
    plain = -(math.log(0.03) + math.log(0.97) + math.log(0.8) + math.log(0.1)) / 4
    assert masked_bce(logits, target).item() == pytest.approx(plain, rel=1e-6)
    loss = masked_bce(logits, target, confident=0.95)
    assert loss.item() == pytest.approx(-(math.log(0.97) + math.log(0.8) + math.log(0.1)) / 3, rel=1e-6)
    loss.backward()
    assert logits.grad is not None and logits.grad[0] == 0 and bool(torch.all(logits.grad[1:] != 0))
    assert masked_bce(logits, target, confident=0.98).item() == pytest.approx(plain, rel=1e-6)


def test_masked_bce_ignores_and_never_nans() -> None:
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    target = torch.full((2, 1, 8, 8), IGNORE)
    loss = masked_bce(logits, target)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)
    target[0, 0, 0, 0] = 1  # only one pixel counts: changing the others' logits changes nothing
    a = masked_bce(logits.detach(), target)
    b = masked_bce(logits.detach() + (torch.arange(128).reshape(2, 1, 8, 8) > 0) * 5.0, target)
    assert a.item() == pytest.approx(b.item())


def test_unpicked_pixels_are_positive_unlabeled_with_the_prior() -> None:
    """The non-negative PU risk by hand: prior 0 makes unpicked pixels background; with a prior, the unpicked
    mean's background term is reduced by the particle pixels' background term, never below zero."""
    p = torch.tensor([0.9, 0.6, 0.2, 0.3, 0.5])
    logits = torch.log(p / (1 - p))
    target = torch.tensor([1, UNPICKED, UNPICKED, 0, HELD])
    as_background = masked_bce(logits, torch.tensor([1, 0, 0, 0, IGNORE]))
    assert masked_bce(logits, target, prior=0.0).item() == pytest.approx(as_background.item(), rel=1e-6)
    prior = 0.2
    u_bg = -(math.log(0.4) + math.log(0.8)) / 2
    risk = prior * -math.log(0.9) + max(0.0, u_bg - prior * -math.log(0.1))
    expected = (-math.log(0.9) - math.log(0.7) + 2 * risk) / 4
    assert masked_bce(logits, target, prior=prior).item() == pytest.approx(expected, rel=1e-6)
    # a particle pixel scored low makes E_pos[-log(1-p)] small... and a large prior clamps the negative part at 0
    clamp = torch.tensor([0.99, 0.05, 0.05, 0.3, 0.5])
    lg = torch.log(clamp / (1 - clamp))
    assert masked_bce(lg, target, prior=0.5).item() == pytest.approx(
        (-math.log(0.99) - math.log(0.7) + 2 * 0.5 * -math.log(0.99)) / 4, rel=1e-6)
    # no particle pixel in the batch: unpicked pixels are background weighted by 1 - prior
    none = torch.tensor([0, UNPICKED, UNPICKED, 0, HELD])
    assert masked_bce(logits, none, prior=prior).item() == pytest.approx(
        (-math.log(0.1) - math.log(0.7) + 2 * (1 - prior) * u_bg) / 4, rel=1e-6)


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 1, 37, 101), (1, 1, 16, 200)])
def test_unet_any_size_same_shape_probabilities(shape: tuple[int, ...]) -> None:
    model = build_unet(ModelConfig(base_width=4)).eval()
    with torch.no_grad():
        out = model(torch.randn(*shape))
        logits = model(torch.randn(*shape), return_logits=True)
    assert out.shape == shape and logits.shape == shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_unet_parameter_counts() -> None:
    # Width 64 (64 -> 1024): 31,042,369, the seed's published class layer for layer (conv biases kept
    # before BatchNorm, transposed-conv upsampling). The seed's prose figure 31,031,361 differs by
    # 11,008 and no variant of its own layout (with/without conv or up-conv biases, BN affine, 1 or 3
    # input channels, 1 or 2 outputs) reaches it; see docs/design.md.
    assert count_parameters(build_unet(ModelConfig(base_width=64))) == 31_042_369
    assert count_parameters(build_unet(ModelConfig(base_width=32))) == 7_765_409
    assert count_parameters(build_unet(ModelConfig(base_width=16))) == 1_943_761


def test_unet_structure() -> None:
    model = build_unet(ModelConfig(base_width=8))
    pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    ups = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(ups) == 4 and len(bns) == 18 and (len(pools) in (1, 4))
    widths = sorted({m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)})
    assert widths == [8, 16, 32, 64, 128]


def test_checkpoint_rule_keeps_the_latest_within_one_standard_error() -> None:
    from cryopick.training.checkpoint import CheckpointRule, f1_standard_error

    assert f1_standard_error(0.8, 100) == pytest.approx(0.04)
    # one label, ~130 validation picks: the 2026-11-28 sequence; step 100's lead is noise
    rule = CheckpointRule()
    kept = [step for step, f1 in [(100, 0.759), (200, 0.742), (300, 0.712), (400, 0.732)] if rule.offer(f1, 130)]
    assert kept == [100, 200, 400]  # 300 is more than one SE (0.037) below 0.759; 400 is not
    assert (rule.kept_f1, rule.top_f1) == (0.732, 0.759)
    # many picks: the same gaps are real, and the best checkpoint stays
    many = CheckpointRule()
    assert [s for s, f1 in [(100, 0.759), (200, 0.742), (300, 0.712)] if many.offer(f1, 5000)] == [100]
    # a later, better checkpoint always wins
    assert many.offer(0.80, 5000) and many.kept_f1 == 0.80
    # a warm start is a floor: the 2026-11-29 one-label round 2 (start 0.779, ~100 picks) kept step 200
    # at 0.747, within one SE of the start; now only checkpoints at least as good as the start are kept
    warm = CheckpointRule()
    warm.start(0.779)
    assert [s for s, f1 in [(100, 0.741), (200, 0.747), (300, 0.711), (400, 0.734)] if warm.offer(f1, 100)] == []
    assert warm.kept_f1 == 0.779
    # round 1 of that campaign (start 0.806): 100 and 200 beat the start, 300 and 400 fell below it
    warm = CheckpointRule()
    warm.start(0.806)
    assert [s for s, f1 in [(100, 0.8125), (200, 0.8085), (300, 0.796), (400, 0.779)] if warm.offer(f1, 100)] == [100, 200]
    # the floor holds in average precision too: EMPIAR-10017, one micrograph, dev seed 0, round 1 (start F1 0.784,
    # AP 0.745): step 300 tied the start in F1 while ranking worse, and the dev micrographs lost 0.028 best F1 with it
    steps = [(100, 0.740, 0.696), (200, 0.751, 0.685), (300, 0.787, 0.714)]
    f1_only, both = CheckpointRule(), CheckpointRule()
    f1_only.start(0.784)
    both.start(0.784, ap=0.745)
    assert [s for s, f1, ap in steps if f1_only.offer(f1, 88)] == [300]
    assert [s for s, f1, ap in steps if both.offer(f1, 88, ap)] == [] and both.kept_f1 == 0.784
    assert both.offer(0.79, 88, 0.75)  # better in both: kept


def test_a_warm_start_with_new_labels_is_an_ordinary_checkpoint() -> None:
    from cryopick.training.checkpoint import CheckpointRule

    # seed 2 of EMPIAR-10028, round 2 (new regions, ~30 validation picks): start 0.776, every trained step 0.75.
    # As the floor the start was kept; as an ordinary checkpoint the last step is within one SE (0.076) and wins
    floored, ordinary = CheckpointRule(), CheckpointRule()
    floored.start(0.7755, 30)
    ordinary.start(0.7755, 30, floor=False)
    steps = [(50, 0.75), (100, 0.75), (150, 0.75), (200, 0.75)]
    assert [s for s, f1 in steps if floored.offer(f1, 30)] == []
    assert [s for s, f1 in steps if ordinary.offer(f1, 30)] == [50, 100, 150, 200]
    # a checkpoint more than one SE below the start is still not kept
    worse = CheckpointRule()
    worse.start(0.85, 500, floor=False)
    assert not worse.offer(0.78, 500) and worse.kept_f1 == 0.85
