"""Fast inference paths give the plain path's answers: BatchNorm folding, channels-last weights,
bfloat16 autocast, torch.compile. Correctness only; speed is measured by benchmarks/throughput.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cryopick.config import ModelConfig, PickConfig
from cryopick.model.unet import UNet, build_unet, count_parameters
from cryopick.inference.tiling import _INFERENCE_CACHE, inference_model, predict_heatmap


def _trained_like_unet(width: int = 8, depth: int = 3, seed: int = 0) -> UNet:
    """A U-Net whose BatchNorm layers hold non-trivial statistics and affine parameters."""
    torch.manual_seed(seed)
    model = UNet(base_width=width, depth=depth)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _image(size: int = 160, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(size, size)).astype(np.float32)


def test_folded_copy_matches_plain_model() -> None:
    model = _trained_like_unet()
    x = torch.from_numpy(_image(64))[None, None]
    fast = inference_model(model)
    with torch.inference_mode():
        ref, out = model(x), fast(x.contiguous(memory_format=torch.channels_last))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_inference_copy_leaves_the_model_untouched() -> None:
    model = _trained_like_unet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inference_model(model)
    predict_heatmap(model, _image(), PickConfig(tile_size=64))
    after = model.state_dict()
    assert before.keys() == after.keys()  # BatchNorm still there: training can go on
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert all(p.requires_grad for p in model.parameters())
    assert model.down[0][0].weight.is_contiguous()  # layout unchanged
    assert count_parameters(build_unet(ModelConfig(base_width=64))) == 31_042_369


@pytest.mark.parametrize("channels_last", [True, False])
def test_fast_heatmap_matches_plain_heatmap(channels_last: bool) -> None:
    model = _trained_like_unet()
    image = _image(200)
    cfg = PickConfig(tile_size=96, tile_batch=3, amp=False)  # float32: the fused network's rounding is the claim
    plain = predict_heatmap(model, image, cfg, fuse=False, channels_last=False)
    fast = predict_heatmap(model, image, cfg, channels_last=channels_last)
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-5)


def test_tile_batch_does_not_change_the_heatmap() -> None:
    model = _trained_like_unet()
    image = _image(200)
    one = predict_heatmap(model, image, PickConfig(tile_size=96, tile_batch=1, amp=False))
    many = predict_heatmap(model, image, PickConfig(tile_size=96, tile_batch=5, amp=False))
    np.testing.assert_allclose(many, one, rtol=0, atol=1e-5)


def test_batchnorm_without_running_stats_is_not_folded() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4, track_running_stats=False), nn.Conv2d(4, 1, 1)).eval()
    fast = inference_model(model)
    assert isinstance(fast[1], nn.BatchNorm2d)  # batch statistics cannot be folded into weights
    x = torch.randn(2, 1, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x.contiguous(memory_format=torch.channels_last)), model(x), rtol=0, atol=1e-5)


def test_bfloat16_autocast_stays_close_to_float32() -> None:
    """bf16 keeps 8 mantissa bits: probabilities move by at most a few hundredths."""
    model = _trained_like_unet()
    image = _image(192)
    fp32 = predict_heatmap(model, image, PickConfig(tile_size=96, amp=False))
    bf16 = predict_heatmap(model, image, PickConfig(tile_size=96, amp=True))
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    assert float(np.abs(bf16 - fp32).max()) < 0.05
    assert float(np.abs(bf16 - fp32).mean()) < 0.01


def test_inference_copy_is_reused_until_the_weights_change() -> None:
    model = _trained_like_unet()
    image = _image(96)
    cfg = PickConfig(tile_size=64, amp=False)
    predict_heatmap(model, image, cfg)
    first = _INFERENCE_CACHE[model][2]
    predict_heatmap(model, image, cfg)
    assert _INFERENCE_CACHE[model][2] is first  # next micrograph: no new copy

    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    model(torch.from_numpy(_image(32))[None, None]).mean().backward()  # also moves BN statistics
    opt.step()
    after_step = predict_heatmap(model, image, cfg)
    assert _INFERENCE_CACHE[model][2] is not first
    np.testing.assert_allclose(after_step, predict_heatmap(model, image, cfg, fuse=False, channels_last=False), rtol=0, atol=1e-5)

    model.train()
    with torch.no_grad():
        model(torch.from_numpy(_image(32, seed=3) * 3)[None, None])  # BN statistics only
    np.testing.assert_allclose(predict_heatmap(model, image, cfg), predict_heatmap(model, image, cfg, fuse=False, channels_last=False), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_compiled_heatmap_matches_eager() -> None:
    pytest.importorskip("torch._inductor")
    torch._dynamo.reset()
    model = _trained_like_unet(width=4, depth=1)
    image = _image(48)
    eager = predict_heatmap(model, image, PickConfig(tile_size=32, amp=False), overlap=0.5)
    compiled = predict_heatmap(model, image, PickConfig(tile_size=32, amp=False), overlap=0.5, compile_model=True)
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=1e-5)



class _LocalFilter(nn.Module):
    """A 9x9 filter and a sigmoid: a heatmap that follows the image, with a known reach of 4 px."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 1, 9, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(3.0 * self.conv(x))


def test_validation_predicts_the_scored_strip_with_the_whole_micrographs_answers() -> None:
    from cryopick.training.dataset import ValItem
    from cryopick.training.loop import VAL_CONTEXT, scored_heatmap

    model, image = _LocalFilter(), _image(318)
    cfg = PickConfig(tile_size=512, tta=2)
    whole = predict_heatmap(model, image, cfg)
    assert whole.std() > 0.1  # the heatmap follows the image
    strip = ValItem("m", image, np.zeros((0, 2)), rows=(201, 259), scale=1.0, original_shape=(318, 318), cols=(41, 299))
    part = scored_heatmap(model, strip, cfg)
    assert not part[: 201 - VAL_CONTEXT - 16].any() and not part[259 + VAL_CONTEXT + 16 :].any()  # never predicted
    np.testing.assert_allclose(part[201:259, 41:299], whole[201:259, 41:299], rtol=0, atol=1e-6)
    unet = _trained_like_unet(width=4, depth=2)  # 318 px: padded; the window is padded and pooled alike
    part = scored_heatmap(unet, strip, cfg)
    np.testing.assert_allclose(part[201:259, 41:299], predict_heatmap(unet, image, cfg)[201:259, 41:299], rtol=0, atol=1e-6)
    everything = ValItem("m", image, np.zeros((0, 2)), rows=(0, 318), scale=1.0, original_shape=(318, 318))
    np.testing.assert_array_equal(scored_heatmap(model, everything, cfg), whole)
