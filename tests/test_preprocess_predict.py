"""Fourier-crop binning, coordinates back in original pixels, tiling without seams, configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryopick.config import ModelConfig, PickConfig, PreprocessConfig, TrainConfig, from_dict
from cryopick.errors import CryopickError
from cryopick.model.unet import build_unet
from cryopick.inference.tiling import gaussian_importance, predict_heatmap, predict_heatmap_spread, predict_views, tile_starts
from cryopick.preprocessing.binning import fourier_crop, normalize, preprocess


def test_fourier_crop_keeps_low_frequencies_and_mean() -> None:
    yy, xx = np.mgrid[:128, :96]
    img = 3.0 + np.cos(2 * np.pi * xx / 32) + np.sin(2 * np.pi * yy / 64)
    small = fourier_crop(img.astype(np.float32), (64, 48))
    yy2, xx2 = np.mgrid[:64, :48]
    expected = 3.0 + np.cos(2 * np.pi * xx2 / 16) + np.sin(2 * np.pi * yy2 / 32)
    np.testing.assert_allclose(small, expected, atol=1e-4)


@pytest.mark.parametrize("shape, binning", [((1000, 1000), 2.0), ((999, 1501), 3.0), ((512, 700), 1.5)])
def test_coordinates_round_trip_through_binning(shape: tuple[int, int], binning: float) -> None:
    img = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    b = preprocess(img, PreprocessConfig(bin=binning))
    assert b.original_shape == shape
    assert abs(b.image.shape[0] - shape[0] / binning) <= 1 and abs(b.image.shape[1] - shape[1] / binning) <= 1
    xy = np.array([[0.0, 0.0], [shape[1] - 1.0, shape[0] - 1.0], [123.4, 456.7]])
    np.testing.assert_allclose(b.to_original(b.to_binned(xy)), xy, atol=1e-9)


def test_binned_pixel_lies_at_scaled_original_coordinate() -> None:
    # A bright point at original (x=200, y=120) must peak at binned (100, 60) for bin 2.
    img = np.zeros((256, 400), np.float32)
    yy, xx = np.mgrid[:256, :400]
    img += np.exp(-((xx - 200) ** 2 + (yy - 120) ** 2) / (2 * 6.0**2))
    b = preprocess(img, PreprocessConfig(bin=2))
    small = fourier_crop(img, b.image.shape)  # before normalising, which clips the lone spot's top
    y, x = np.unravel_index(np.argmax(small), small.shape)
    np.testing.assert_allclose(b.to_original(np.array([[x, y]])), [[200, 120]])


def test_target_pixel_size_and_normalize() -> None:
    img = np.random.default_rng(1).normal(5, 3, size=(300, 300)).astype(np.float32)
    b = preprocess(img, PreprocessConfig(bin=1, target_pixel_size=4.0), pixel_size=1.0)
    assert b.image.shape == (75, 75) and b.scale == (4.0, 4.0)
    with pytest.raises(CryopickError, match="pixel size"):
        preprocess(img, PreprocessConfig(target_pixel_size=4.0), pixel_size=None)
    n = normalize(img.copy(), clip_sigma=None)
    assert abs(float(n.mean())) < 1e-5 and float(n.std()) == pytest.approx(1.0, rel=1e-4)
    img[5, 5] = 1e6  # a hot pixel: robust clipping bounds it near 4 sigma and keeps the rest intact
    n = normalize(img.copy(), clip_sigma=4.0)
    assert float(n.max()) < 4.5 and float(np.delete(n.ravel(), 5 * 300 + 5).std()) == pytest.approx(1.0, abs=0.01)
    assert float(normalize(img.copy(), clip_sigma=None).std()) == pytest.approx(1.0)


def test_tile_starts_cover_everything() -> None:
    assert tile_starts(100, 100, 75) == [0]
    s = tile_starts(1000, 256, 192)
    assert s[0] == 0 and s[-1] == 1000 - 256 and all(b - a <= 192 for a, b in zip(s, s[1:]))
    w = gaussian_importance((64, 64))
    assert w.min() > 0 and w[32, 32] == w.max()


def _calibrated_model() -> torch.nn.Module:
    """A random U-Net whose BatchNorm statistics are set on data, so its output varies with input."""
    torch.manual_seed(0)
    model = build_unet(ModelConfig(base_width=4))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(4, 1, 96, 96))
    return model.eval()


class BoxFilter(torch.nn.Module):
    """A 9x9 mean filter with zero padding: exact inside a tile, darkened within 4 px of its edge."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 9, padding=4, bias=False)
        torch.nn.init.constant_(self.conv.weight, 1 / 81)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_blended_tiles_leave_no_seams() -> None:
    model, img = BoxFilter(), np.ones((300, 700), np.float32)
    one_tile = predict_heatmap(model, img[:128, :128], PickConfig(tile_size=128))
    assert one_tile[64, 0] < 0.6  # the model itself has strong edge artefacts in every tile ...
    tiled = predict_heatmap(model, img, PickConfig(tile_size=128, tile_batch=3), overlap=0.25)
    interior = tiled[4:-4, 4:-4]  # ... yet the blended heatmap is flat away from the image edge
    assert np.abs(interior - 1.0).max() < 0.01
    assert tiled.shape == img.shape and tiled.dtype == np.float32


def test_tiled_unet_heatmap_matches_one_pass() -> None:
    model = _calibrated_model()
    img = np.random.default_rng(0).normal(size=(160, 400)).astype(np.float32)
    whole = predict_heatmap(model, img, PickConfig(tile_size=400), overlap=0.0)
    tiled = predict_heatmap(model, img, PickConfig(tile_size=128, tile_batch=3), overlap=0.5)
    assert np.abs(tiled - whole).mean() < 0.05 * max(1.0, float(whole.std()) * 10)
    assert np.corrcoef(tiled.ravel(), whole.ravel())[0, 1] > 0.8


def test_amp_and_channels_last_agree() -> None:
    model = _calibrated_model()
    img = np.random.default_rng(2).normal(size=(128, 128)).astype(np.float32)
    a = predict_heatmap(model, img, PickConfig(amp=False), channels_last=False)
    b = predict_heatmap(model, img, PickConfig(amp=False), channels_last=True)
    c = predict_heatmap(model, img, PickConfig(amp=True))
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert 0.0 < np.abs(a - c).max() < 0.05  # bfloat16 on CPU: close, not the same


@pytest.mark.parametrize("native", [True, False])
def test_heatmaps_run_in_bfloat16_by_default_where_the_hardware_runs_it_natively(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``amp`` None (the default of pick, campaign prediction and validation) follows the hardware, as training does."""
    import cryopick.runtime

    model = _calibrated_model()
    img = np.random.default_rng(2).normal(size=(128, 128)).astype(np.float32)
    monkeypatch.setattr(cryopick.runtime, "bf16_is_fast", lambda device_type: native)
    assert PickConfig().amp is None
    np.testing.assert_array_equal(predict_heatmap(model, img, PickConfig()), predict_heatmap(model, img, PickConfig(amp=native)))
    assert not np.array_equal(predict_heatmap(model, img, PickConfig()), predict_heatmap(model, img, PickConfig(amp=not native)))


def test_test_time_augmentation_averages_views_and_is_equivariant() -> None:
    model = _calibrated_model()  # float32: the views' rounding would blur the identities below
    img = np.random.default_rng(3).normal(size=(128, 128)).astype(np.float32)
    plain = lambda a: predict_heatmap(model, np.ascontiguousarray(a), PickConfig(tta=1, amp=False))  # noqa: E731
    # the network alone is not rotation-equivariant: otherwise averaging views would change nothing
    assert np.abs(plain(np.rot90(img)) - np.rot90(plain(img))).max() > 1e-3
    # tta=4 is the mean of the identity, both flips and the half turn, each mapped back
    views = [plain(img), plain(img[:, ::-1])[:, ::-1], plain(img[::-1])[::-1], plain(img[::-1, ::-1])[::-1, ::-1]]
    np.testing.assert_allclose(predict_heatmap(model, img, PickConfig(tta=4, amp=False)), np.mean(views, axis=0), atol=1e-5)
    # tta=8 averages over all symmetries of the square, so it commutes with a quarter turn
    h8 = predict_heatmap(model, img, PickConfig(tta=8, amp=False))
    np.testing.assert_allclose(predict_heatmap(model, np.ascontiguousarray(np.rot90(img)), PickConfig(tta=8, amp=False)),
                               np.rot90(h8), atol=1e-5)
    rect = np.random.default_rng(4).normal(size=(96, 160)).astype(np.float32)  # views of other shapes
    assert predict_heatmap(model, rect, PickConfig(tta=8, tile_size=64)).shape == rect.shape
    with pytest.raises(CryopickError, match="pick.tta"):
        from_dict(PickConfig, {"tta": 3}, "pick")


def test_spread_is_the_std_of_the_views_beside_the_same_heatmap() -> None:
    model = _calibrated_model()
    img = np.random.default_rng(5).normal(size=(128, 128)).astype(np.float32)
    heatmap, spread = predict_heatmap_spread(model, img, PickConfig(tta=8))
    np.testing.assert_array_equal(heatmap, predict_heatmap(model, img, PickConfig(tta=8)))  # picking's heatmap, unchanged
    views = predict_views(model, img, PickConfig(tta=8))
    np.testing.assert_allclose(spread, views.std(axis=0), atol=1e-5)
    assert spread.max() > 1e-3  # the views differ (the network is not equivariant)
    assert not predict_heatmap_spread(model, img, PickConfig(tta=1))[1].any()  # one view: no spread


def test_config_validation_names_the_key() -> None:
    with pytest.raises(CryopickError, match="train.stepz"):
        from_dict(TrainConfig, {"stepz": 10}, "train")
    with pytest.raises(CryopickError, match="train.steps"):
        from_dict(TrainConfig, {"steps": "many"}, "train")
    with pytest.raises(CryopickError, match="train.patch_size must be a multiple of 16"):
        from_dict(TrainConfig, {"patch_size": 100}, "train")
    with pytest.raises(CryopickError, match="pick.threshold"):
        from_dict(PickConfig, {"threshold": 1.5}, "pick")
    assert from_dict(ModelConfig, {"base_width": 32}, "model").base_width == 32


def test_an_axis_slightly_over_a_tile_runs_as_one_tile() -> None:
    from cryopick.inference.tiling import tile_edge

    assert tile_edge(531, 512) == 531  # one tile: 531 px of input instead of two 512-px tiles
    assert tile_edge(768, 512) == 768 and tile_edge(769, 512) == 512
    assert tile_edge(300, 512) == 300
