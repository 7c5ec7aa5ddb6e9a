"""Whole-micrograph heatmaps by sliding-window inference (nnU-Net style).

Tiles overlap and are blended with a Gaussian importance map, so there are no tile seams; tiles
run in batches under ``torch.inference_mode``, so peak memory is set by the tile batch, not by
the micrograph. The network runs as an inference copy with each BatchNorm folded into the conv
before it and channels-last weights (:func:`inference_model`): same outputs to float rounding,
one memory pass less per conv layer. ``amp`` (default: where the hardware runs bfloat16 natively, as training)
runs the network in bfloat16; the blending stays float32.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from collections.abc import Hashable, Iterator
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from cryopick.config import HeatmapConfig
from cryopick.errors import CryopickError
from cryopick.runtime import resolve_amp

TILE_OVERLAP = 0.25  # share of a tile its neighbours overlap; the Gaussian blend hides the seams
ONE_TILE_SLACK = 1.5  # an axis up to this many tile edges runs as one tile: fewer pixels than two overlapping tiles


def tile_edge(length: int, tile: int) -> int:
    """Tile edge along an axis of ``length`` px: the whole axis when it is at most ``ONE_TILE_SLACK`` tiles.

    A 531-px axis (a 1024² micrograph binned 1.93×) in 512-px tiles would take two overlapping
    tiles, 1024 px of network input for 531 px of image; as one tile it takes 531.
    """
    return length if length <= ONE_TILE_SLACK * tile else tile


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; a CUDA device this machine lacks is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CryopickError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CryopickError(f"device {name!r} asked for, but this torch build has no CUDA or no GPU is visible "
                                "(use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CryopickError(f"device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) are visible")
    return device


def gaussian_importance(shape: tuple[int, int], sigma_scale: float = 0.125) -> np.ndarray:
    """(h, w) float32 Gaussian weights peaking at the tile centre, clamped above zero.

    Tile borders see the least context, so they count least where tiles overlap.
    """
    axes = []
    for size in shape:
        c = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
        g = np.exp(-(c**2) / (2 * (size * sigma_scale) ** 2))
        # floor each axis, not the product: near an image corner both tiles' weights would hit a
        # 2-D floor together and an edge pixel would count as much as a centre one
        axes.append(np.maximum(g / g.max(), 1e-3))
    return np.outer(axes[0], axes[1]).astype(np.float32)


def tile_starts(length: int, tile: int, step: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of ``tile`` px and stride <= ``step``."""
    if length <= tile:
        return [0]
    n = int(np.ceil((length - tile) / step)) + 1
    return [int(round(s)) for s in np.linspace(0, length - tile, n)]


def _tiles(shape: tuple[int, int], tile: tuple[int, int], overlap: float) -> Iterator[tuple[int, int]]:
    for y in tile_starts(shape[0], tile[0], max(16, int(tile[0] * (1.0 - overlap)))):
        for x in tile_starts(shape[1], tile[1], max(16, int(tile[1] * (1.0 - overlap)))):
            yield y, x


def _autocast(device: torch.device, setting: bool | None) -> contextlib.AbstractContextManager:
    """The heatmap's precision: ``setting`` None is bfloat16 where the hardware runs it natively (as training)."""
    if not resolve_amp(setting, device.type):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _fold_batchnorm(module: nn.Module) -> None:
    """In place: every ``Sequential`` [Conv2d, BatchNorm2d] pair -> [folded Conv2d, Identity]."""
    for child in module.children():
        _fold_batchnorm(child)
    if not isinstance(module, nn.Sequential):
        return
    layers = list(module)
    for i in range(len(layers) - 1):
        conv, bn = layers[i], layers[i + 1]
        # a BN without running statistics normalises by batch statistics: nothing to fold
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
            module[i] = fuse_conv_bn_eval(conv, bn)
            module[i + 1] = nn.Identity()


def inference_model(model: nn.Module, channels_last: bool = True, fuse: bool = True) -> nn.Module:
    """An eval-mode copy of ``model`` for inference; ``model`` itself is left untouched.

    Args:
        fuse: fold each BatchNorm into the conv before it (exact up to float rounding in eval).
        channels_last: store conv weights NHWC, matching channels-last input, so oneDNN does
            not reorder them on every call.
    """
    fast = copy.deepcopy(model).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    if fuse:
        _fold_batchnorm(fast)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # accepted at run time; torch's stubs omit it
    return fast


# model -> (settings, weights signature, inference copy): picking micrograph after micrograph
# reuses one copy (copying and folding width 64 costs ~0.3 s); any weight change rebuilds it
_INFERENCE_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[Hashable, Hashable, nn.Module]] = weakref.WeakKeyDictionary()


def _weights_signature(model: nn.Module) -> Hashable | None:
    """Identity, storage, device and in-place version of every tensor (None: cannot tell)."""
    try:
        return tuple((t.data_ptr(), t._version, t.device, t.dtype, t.shape)
                     for t in (*model.parameters(), *model.buffers()))
    except RuntimeError:  # inference tensors have no version counter
        return None


def _cached_inference_model(model: nn.Module, channels_last: bool, fuse: bool, compile_model: bool) -> nn.Module:
    settings = (channels_last, fuse, compile_model)
    sig = _weights_signature(model)
    hit = _INFERENCE_CACHE.get(model)
    if sig is not None and hit is not None and hit[0] == settings and hit[1] == sig:
        return hit[2]
    net = inference_model(model, channels_last, fuse)
    if compile_model:
        net = cast(nn.Module, torch.compile(net, dynamic=False))  # an OptimizedModule
    if sig is not None:
        _INFERENCE_CACHE[model] = (settings, sig, net)
    return net


# views per TTA level as (quarter turns, then a left-right flip); 4 = the flips and the half turn
# (no transposes, so non-square tiles keep their shape), 8 = all eight symmetries of the square
TTA_TRANSFORMS: dict[int, tuple[tuple[int, bool], ...]] = {
    1: ((0, False),),
    2: ((0, False), (0, True)),
    4: ((0, False), (0, True), (2, False), (2, True)),
    8: tuple((k, f) for k in range(4) for f in (False, True)),
}


def _forward(image: np.ndarray, k: int, flip: bool) -> np.ndarray:
    out = np.rot90(image, k)
    return np.ascontiguousarray(out[:, ::-1] if flip else out)


def _inverse(heatmap: np.ndarray, k: int, flip: bool) -> np.ndarray:
    return np.rot90(heatmap[:, ::-1] if flip else heatmap, -k)


def predict_heatmap(
    model: nn.Module,
    image: np.ndarray,
    cfg: HeatmapConfig | None = None,
    device: torch.device | None = None,
    fuse: bool = True,
    compile_model: bool = False,
    channels_last: bool = True,
    overlap: float = TILE_OVERLAP,
) -> np.ndarray:
    """Particle probabilities for a whole preprocessed micrograph.

    Image (H, W) -> tiles (B, 1, t, t) -> probabilities (B, 1, t, t) -> Gaussian-blended (H, W).

    With ``cfg.tta`` > 1 the heatmap is the mean over that many flips/rotations of the micrograph
    (each mapped back): the network is not exactly equivariant, and averaging its views removes
    part of its orientation-dependent error (measured: +0.007 to +0.014 F1 on the EMPIAR-10017
    development set, docs/design.md).

    Args:
        model: a U-Net returning (B, 1, h, w) probabilities; put in eval mode here.
        image: (H, W) float32 preprocessed micrograph.
        cfg: tiling / precision / test-time augmentation settings.
        fuse: run the BatchNorm-folded copy (:func:`inference_model`); False runs ``model`` as is.
        compile_model: ``torch.compile`` the inference copy (a one-off compile, reused while
            the weights stay the same; measured slower than eager on this project's 2-core CPU).
        channels_last: NHWC activations and weights (oneDNN's and cuDNN's fast layout); False only to compare.
        overlap: share of a tile that its neighbours overlap.

    Returns:
        (H, W) float32 heatmap in [0, 1].
    """
    return _mean_and_spread(model, image, cfg or HeatmapConfig(), device, False, fuse, compile_model, channels_last, overlap)[0]


def predict_heatmap_spread(model: nn.Module, image: np.ndarray, cfg: HeatmapConfig | None = None,
                           device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict_heatmap` and the per-pixel standard deviation of its test-time-augmentation views, (H, W) each.

    The spread says where the network's answer depends on the orientation it sees (what active learning
    calls disagreement); it costs a sum of squares beside the views picking computes anyway, and the
    heatmap is the same as :func:`predict_heatmap`'s.
    """
    mean, spread = _mean_and_spread(model, image, cfg or HeatmapConfig(), device, True)
    assert spread is not None
    return mean, spread


def _mean_and_spread(model: nn.Module, image: np.ndarray, cfg: HeatmapConfig, device: torch.device | None, spread: bool,
                     fuse: bool = True, compile_model: bool = False, channels_last: bool = True,
                     overlap: float = TILE_OVERLAP) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean (H, W) of the views and, with ``spread``, their population standard deviation (H, W)."""
    acc = np.zeros(image.shape, dtype=np.float32)
    sq = np.zeros(image.shape, dtype=np.float32) if spread else None
    for view in _views(model, image, cfg, device, fuse, compile_model, channels_last, overlap):
        acc += view
        if sq is not None:
            sq += view * view
    n = len(TTA_TRANSFORMS[cfg.tta])
    mean = acc / n
    return mean, None if sq is None else np.sqrt(np.maximum(sq / n - mean * mean, 0.0))


def predict_views(model: nn.Module, image: np.ndarray, cfg: HeatmapConfig | None = None,
                  device: torch.device | None = None) -> np.ndarray:
    """Each test-time-augmentation view's heatmap, mapped back: (V, H, W), V = ``cfg.tta``.

    Their mean is :func:`predict_heatmap`; their spread says where the network's answer depends on
    the orientation it sees, which costs nothing beyond the views picking computes anyway.
    """
    cfg = cfg or HeatmapConfig()
    return np.stack(list(_views(model, image, cfg, device)))


def _views(model: nn.Module, image: np.ndarray, cfg: HeatmapConfig, device: torch.device | None, fuse: bool = True,
           compile_model: bool = False, channels_last: bool = True, overlap: float = TILE_OVERLAP) -> Iterator[np.ndarray]:
    """The (H, W) heatmap of each test-time-augmentation view in turn, in the image's orientation."""
    device = device or next(model.parameters()).device
    model.eval()
    if fuse or channels_last or compile_model:
        net = _cached_inference_model(model, channels_last, fuse, compile_model)
    else:
        net = model
    for k, flip in TTA_TRANSFORMS[cfg.tta]:
        yield _inverse(_tiled_heatmap(net, _forward(image, k, flip), cfg, device, overlap, channels_last), k, flip)


def _tiled_heatmap(net: nn.Module, image: np.ndarray, cfg: HeatmapConfig, device: torch.device, overlap: float,
                   channels_last: bool) -> np.ndarray:
    """(H, W) heatmap of one view: overlapping tiles in batches, Gaussian-blended."""
    h, w = image.shape
    th, tw = tile_edge(h, cfg.tile_size), tile_edge(w, cfg.tile_size)  # small micrographs: one tile
    weight = gaussian_importance((th, tw))
    acc = np.zeros((h, w), dtype=np.float32)
    norm = np.zeros((h, w), dtype=np.float32)
    positions = list(_tiles((h, w), (th, tw), overlap))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    with torch.inference_mode(), _autocast(device, cfg.amp):
        for i in range(0, len(positions), cfg.tile_batch):
            batch_pos = positions[i : i + cfg.tile_batch]
            batch = np.stack([image[y : y + th, x : x + tw] for y, x in batch_pos])[:, None]
            x_t = torch.from_numpy(batch).to(device).contiguous(memory_format=memory_format)
            probs = net(x_t).float().cpu().numpy()[:, 0]
            for (y, x), p in zip(batch_pos, probs):
                acc[y : y + th, x : x + tw] += p * weight
                norm[y : y + th, x : x + tw] += weight
    return acc / norm
