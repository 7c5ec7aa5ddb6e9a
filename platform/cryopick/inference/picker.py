"""A trained picker and the one way to pick a micrograph with it.

``RUNDIR/model.pt`` holds the weights and a :class:`PickerMeta` (diameter, preprocessing,
threshold and peak distance chosen on validation, the edge band the expert picks kept free), so
``cryopick pick`` needs no other input. :func:`pick_micrograph` is what ``cryopick pick`` and the
batch run over a data set call: micrograph -> preprocess -> tiled heatmap -> peaks -> (optional
carbon/ice mask) -> coordinates in ORIGINAL pixels. The Ray prediction stage, which keeps heatmaps
rather than picks, computes the same heatmap with :func:`with_oom_retry`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from cryopick.inference.border import outside_band
import dataclasses

from cryopick.config import ModelConfig, PickConfig, PreprocessConfig, from_dict
from cryopick.errors import CryopickError
from cryopick.inference.mask import MaskConfig, apply_mask
from cryopick.inference.peaks import find_peaks
from cryopick.inference.tiling import predict_heatmap
from cryopick.io.atomic import atomic_write
from cryopick.io.micrograph import Micrograph
from cryopick.model.unet import UNet, build_unet
from cryopick.preprocessing.binning import Binned, preprocess, resolve_binning

MODEL_FILE = "model.pt"
T = TypeVar("T")


@dataclass
class PickerMeta:
    """What a model needs at picking time; distances in ORIGINAL micrograph pixels."""

    diameter: float
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    threshold: float = 0.5
    min_distance: float = 0.0  # 0 -> half the diameter
    smooth_sigma: float = 1.0  # binned px
    val_f1: float | None = None
    border: float = 0.0  # edge band the expert picks left empty (cryopick.inference.border), original px

    def __post_init__(self) -> None:
        # a model always carries the binning it was trained with, never "from the diameter"
        self.preprocess = resolve_binning(self.preprocess, self.diameter)

    def resolved_min_distance(self) -> float:
        return self.min_distance if self.min_distance > 0 else 0.5 * self.diameter

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# preprocessing settings that models saved before they became fixed carry, with the only values
# they ever took; a model saved with other values would preprocess differently and is refused
_FIXED_PREPROCESS = {"normalize": True, "clip_sigma": 4.0, "lowpass_sigma": 0.0}


def meta_from_dict(d: dict[str, Any]) -> PickerMeta:
    d = dict(d)
    pre = dict(d.get("preprocess") or {})
    for key, value in _FIXED_PREPROCESS.items():
        if key in pre and pre.pop(key) != value:
            raise CryopickError(f"the model was saved with preprocess.{key} other than {value}, which this version no longer supports")
    d["preprocess"] = from_dict(PreprocessConfig, pre, "preprocess")
    d["model"] = from_dict(ModelConfig, d.get("model"), "model")
    return PickerMeta(**d)


def save_picker(path: str | Path, model: nn.Module, meta: PickerMeta) -> Path:
    """Write weights + meta atomically (a crash never leaves a half checkpoint)."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".pt":
        path = path / MODEL_FILE
    module = getattr(model, "module", model)  # unwrap DDP
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    with atomic_write(path, suffix=".pt") as tmp:
        torch.save({"state_dict": state, "meta": meta.as_dict(), "format": 1}, tmp)
    return path


def load_picker(path: str | Path, device: torch.device | str = "cpu") -> tuple[UNet, PickerMeta]:
    """Load a picker from a run directory or a ``.pt`` file, in eval mode on ``device``."""
    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    if not file.is_file():
        raise CryopickError("no trained model here (expected a run directory with model.pt)", path)
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
        meta = meta_from_dict(ckpt["meta"])
        model = build_unet(meta.model)
        model.load_state_dict(ckpt["state_dict"])
    except CryopickError:
        raise
    except Exception as exc:
        raise CryopickError(f"not a cryopick model file ({type(exc).__name__}: {exc})", file) from None
    return model.to(device).eval(), meta


def heatmap_to_picks(
    heatmap: np.ndarray,
    binned: Binned,
    meta: PickerMeta,
    threshold: float,
    min_distance: float | None = None,
    border: float | None = None,
    smooth_sigma: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of a binned heatmap -> (xy in ORIGINAL pixels, scores).

    ``None`` settings take the model's stored values; peaks closer than ``border`` (original px)
    to the micrograph's edge are dropped.
    """
    md = (min_distance or meta.resolved_min_distance()) / binned.mean_scale
    sigma = meta.smooth_sigma if smooth_sigma is None else smooth_sigma
    edge = meta.border if border is None else border
    allowed = outside_band(heatmap.shape, binned.scale, binned.original_shape, edge)
    xy, scores = find_peaks(heatmap, md, threshold, sigma, allowed=allowed)
    return binned.to_original(xy), scores


@dataclass
class Picked:
    """One picked micrograph.

    Attributes:
        xy: (N, 2) picks, ORIGINAL px; scores: (N,) heatmap peak values.
        heatmap: (h, w) float32 particle probabilities on the binned grid.
        binned: the preprocessed micrograph the heatmap was computed on.
        n_masked: picks the carbon/ice mask removed; masked_fraction: share of the area it flagged.
    """

    xy: np.ndarray
    scores: np.ndarray
    heatmap: np.ndarray
    binned: Binned
    n_masked: int = 0
    masked_fraction: float = 0.0


def _oom_types() -> tuple[type[BaseException], ...]:
    torch_oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return (MemoryError, torch_oom)


def heatmap_with_retry(model: nn.Module, image: np.ndarray, cfg: PickConfig) -> np.ndarray:
    """:func:`predict_heatmap`, halving ``cfg.tile_batch`` on out-of-memory until it is 1."""
    return with_oom_retry(lambda c: predict_heatmap(model, image, c), cfg)


def with_oom_retry(predict: Callable[[PickConfig], T], cfg: PickConfig) -> T:
    """``predict(cfg)``, halving ``cfg.tile_batch`` on out-of-memory until it is 1."""
    tile_batch = cfg.tile_batch
    while True:
        try:
            return predict(dataclasses.replace(cfg, tile_batch=tile_batch))
        except _oom_types() as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if tile_batch == 1:
                detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise CryopickError(f"out of memory even with tile_batch=1 ({detail})") from None
            tile_batch = max(1, tile_batch // 2)


def pick_micrograph(
    model: nn.Module,
    meta: PickerMeta,
    micrograph: Micrograph | Binned,
    cfg: PickConfig,
    *,
    mask: MaskConfig | None = None,
    retry_oom: bool = False,
) -> Picked:
    """Pick one micrograph: the single picking path of every command and engine.

    Args:
        micrograph: as read (preprocessed here with the model's settings) or already preprocessed.
        cfg: tiling, test-time augmentation and overrides of the stored threshold / distance / border.
        mask: drop picks in outlier regions (carbon, thick ice) when ``mask.enabled``.
        retry_oom: on out-of-memory, retry with half the tile batch (down to 1) instead of failing.

    Raises:
        CryopickError: the particle is larger than the micrograph; out of memory at tile batch 1.
    """
    if isinstance(micrograph, Micrograph):
        h, w = micrograph.shape
        if meta.diameter >= min(h, w):
            raise CryopickError(f"micrograph is {w}x{h} px, smaller than the particle diameter {meta.diameter:g} px the model picks",
                                micrograph.path)
        binned = preprocess(micrograph.data, meta.preprocess, micrograph.pixel_size)
    else:
        binned = micrograph
    heatmap = heatmap_with_retry(model, binned.image, cfg) if retry_oom else predict_heatmap(model, binned.image, cfg)
    threshold = meta.threshold if cfg.threshold is None else cfg.threshold
    xy, scores = heatmap_to_picks(heatmap, binned, meta, threshold, cfg.min_distance, cfg.border)
    removed, flagged = 0, 0.0
    if mask is not None and mask.enabled:
        xy, scores, removed, flagged = apply_mask(binned, xy, scores, meta.diameter, mask)
    return Picked(xy, scores, heatmap, binned, removed, flagged)
