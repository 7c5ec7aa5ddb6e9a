"""A trained picker: the U-Net plus everything needed to pick with it, saved as one file.

``RUNDIR/model.pt`` holds the weights and a :class:`PickerMeta` (diameter, preprocessing,
threshold and peak distance chosen on validation, the edge band the expert picks kept free), so ``cryopick pick`` needs no other input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cryopick.border import outside_band
from cryopick.config import ModelConfig, PickConfig, PreprocessConfig, from_dict
from cryopick.errors import CryopickError
from cryopick.io.atomic import atomic_write
from cryopick.model import UNet, build_unet
from cryopick.peaks import find_peaks
from cryopick.predict import predict_heatmap
from cryopick.preprocess import Binned

MODEL_FILE = "model.pt"


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
    border: float = 0.0  # edge band the expert picks left empty (cryopick.border), original px

    def resolved_min_distance(self) -> float:
        return self.min_distance if self.min_distance > 0 else 0.5 * self.diameter

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def meta_from_dict(d: dict[str, Any]) -> PickerMeta:
    d = dict(d)
    d["preprocess"] = from_dict(PreprocessConfig, d.get("preprocess"), "preprocess")
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


def pick_binned(
    model: nn.Module, binned: Binned, meta: PickerMeta, cfg: PickConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heatmap and picks of one preprocessed micrograph.

    Returns:
        xy: (N, 2) picks in ORIGINAL pixels; scores: (N,); heatmap: (h, w) binned heatmap.
    """
    heatmap = predict_heatmap(model, binned.image, cfg)
    threshold = meta.threshold if cfg.threshold is None else cfg.threshold
    xy, scores = heatmap_to_picks(heatmap, binned, meta, threshold, cfg.min_distance, cfg.border, cfg.smooth_sigma)
    return xy, scores, heatmap
