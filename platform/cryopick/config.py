"""Typed, validated configuration: dataclasses built from dicts/YAML with clear errors.

Unknown keys, wrong types and impossible values raise :class:`CryopickError` naming the key,
so a bad config fails before any work (or cluster) starts.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from cryopick.errors import CryopickError

T = TypeVar("T")


@dataclass
class PreprocessConfig:
    """How a micrograph becomes network input (stored with every model)."""

    RETIRED: ClassVar[dict[str, str]] = {
        "normalize": "was removed: micrographs are always normalised (mean 0, std 1)",
        "clip_sigma": "was removed: outliers are always clipped at 4 robust sigmas",
        "lowpass_sigma": "was removed: the Fourier crop is the only low-pass filter",
    }

    bin: float | None = None  # Fourier-crop factor; None = diameter / target_diameter (resolved at training)
    target_pixel_size: float | None = None  # Å/px after binning (needs a pixel size); overrides bin
    target_diameter: float = 20.0  # particle diameter in binned px that the default binning aims at (docs/design.md)

    def validate(self, where: str = "preprocess") -> None:
        if self.bin is not None:
            _positive(self.bin, f"{where}.bin")
        _positive(self.target_diameter, f"{where}.target_diameter")
        if self.target_pixel_size is not None:
            _positive(self.target_pixel_size, f"{where}.target_pixel_size")


# Peak distances tried on validation (training and Tune), as fractions of the particle diameter.
# Crowded data sets (EMPIAR-10017: median neighbour distance 0.85 diameters) need less than one.
MIN_DISTANCE_FRACTIONS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.75, 1.0)


@dataclass
class ModelConfig:
    """U-Net shape."""

    base_width: int = 16  # 64 is the full 31 M-parameter U-Net
    depth: int = 4  # number of poolings

    def validate(self, where: str = "model") -> None:
        _positive(self.base_width, f"{where}.base_width")
        if not 1 <= self.depth <= 6:
            raise CryopickError(f"{where}.depth must be between 1 and 6, got {self.depth}")


_FIXED = "was removed: fixed in cryopick.training (docs/design.md says why)"


@dataclass
class TrainConfig:
    """Patch training; the same settings for one process (``cryopick train``) and Ray Train."""

    RETIRED: ClassVar[dict[str, str]] = {
        "weight_decay": _FIXED, "pos_weight": _FIXED, "intensity_augment": _FIXED, "label_radius_fraction": _FIXED,
        "channels_last": "was removed: training always runs channels-last",
        "device": "is a flag of cryopick train (--device); self-training places work with ray.use_gpu",
        "num_threads": "is a flag of cryopick train (--threads); Ray workers take theirs from ray.cpu_per_worker",
        "max_minutes": "is a flag of cryopick train (--max-minutes)",
    }

    patch_size: int | None = None  # binned px, a multiple of 16; None = PATCH_DIAMETERS particle diameters
    batch_size: int = 8  # patches per step (per worker under DDP); 8 patches of 7 diameters at 20 px (docs/design.md)
    steps: int = 1000
    lr: float = 1e-3
    val_fraction: float = 0.2  # share of each labeled micrograph's area held back if no val set
    val_every: int = 250
    seed: int = 0
    amp: bool | None = None  # bfloat16 autocast of the forward pass; None: where the hardware runs bf16 natively

    def validate(self, where: str = "train") -> None:
        for key in ("batch_size", "steps", "val_every"):
            _positive(getattr(self, key), f"{where}.{key}")
        _positive(self.lr, f"{where}.lr")
        if self.patch_size is not None and (self.patch_size <= 0 or self.patch_size % 16):
            raise CryopickError(f"{where}.patch_size must be a multiple of 16, got {self.patch_size}")
        if not 0.0 <= self.val_fraction < 0.9:
            raise CryopickError(f"{where}.val_fraction must be in [0, 0.9), got {self.val_fraction}")

    @property
    def patch(self) -> int:
        """The patch edge; it is resolved from the particle diameter before training (``resolve_geometry``)."""
        if self.patch_size is None:
            raise CryopickError("train.patch_size is not resolved: call training.patches.resolve_geometry() first")
        return self.patch_size


@dataclass
class HeatmapConfig:
    """Whole-micrograph heatmaps: tiling, precision and test-time augmentation."""

    RETIRED: ClassVar[dict[str, str]] = {
        "tile_overlap": "was removed: tiles always overlap by a quarter",
        "channels_last": "was removed: inference always runs channels-last",
        "smooth_sigma": "was removed: the peak smoothing is stored with the model",
    }

    tile_size: int = 512  # binned pixels
    tile_batch: int = 4  # tiles per forward pass (bounds memory; halved on out-of-memory in batch runs)
    amp: bool | None = None  # bfloat16 autocast (float16 on GPUs without bf16); None: where the hardware runs bf16 natively
    tta: int = 8  # test-time augmentation: heatmaps averaged over 1, 2, 4 or 8 flips/rotations (docs/design.md)

    def validate(self, where: str = "predict") -> None:
        if self.tta not in (1, 2, 4, 8):
            raise CryopickError(f"{where}.tta must be 1, 2, 4 or 8, got {self.tta}")
        _positive(self.tile_size, f"{where}.tile_size")
        if self.tile_size % 16:
            raise CryopickError(f"{where}.tile_size must be a multiple of 16, got {self.tile_size}")
        _positive(self.tile_batch, f"{where}.tile_batch")


@dataclass
class PickConfig(HeatmapConfig):
    """Heatmap -> coordinates: :class:`HeatmapConfig` plus overrides of what the model stores."""

    threshold: float | None = None  # None = the threshold stored with the model
    min_distance: float | None = None  # px (original); None = the value stored with the model
    border: float | None = None  # drop picks closer than this to the edge (original px); None = stored

    def validate(self, where: str = "pick") -> None:
        super().validate(where)
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise CryopickError(f"{where}.threshold must be in [0, 1], got {self.threshold}")
        if self.min_distance is not None:
            _positive(self.min_distance, f"{where}.min_distance")
        if self.border is not None and self.border < 0:
            raise CryopickError(f"{where}.border must be >= 0 px, got {self.border}")


def _positive(value: float, key: str) -> None:
    if not value > 0:
        raise CryopickError(f"{key} must be positive, got {value!r}")


def _check_type(value: Any, hint: Any, key: str) -> Any:
    """Coerce ``value`` to ``hint`` where lossless (int -> float), else raise naming ``key``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, key)
            except CryopickError as exc:
                errors.append(str(exc))
        raise CryopickError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise CryopickError(f"{key} must be a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return [_check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise CryopickError(f"{key} must be a mapping, got {type(value).__name__}")
        return dict(value)
    if hint is Any:
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise CryopickError(f"{key} must be true or false, got {value!r}")
    if hint in (int, float) and isinstance(value, bool):
        raise CryopickError(f"{key} must be a number, got {value!r}")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise CryopickError(f"{key} must be of type {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types.

    Nested dataclass fields take nested dicts. ``validate()`` runs when the class has one.
    """
    data = data or {}
    if not isinstance(data, dict):
        raise CryopickError(f"{where or cls.__name__} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        retired: dict[str, str] = getattr(cls, "RETIRED", {})
        if unknown[0] in retired:
            raise CryopickError(f"config key {prefix}{unknown[0]} {retired[unknown[0]]}")
        raise CryopickError(
            f"unknown config key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})"
        )
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(where or cls.__name__.lower().replace("config", ""))
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict, with a clear error for bad syntax."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CryopickError("no such config file", path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CryopickError(f"not valid YAML ({str(exc).splitlines()[0]})", path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CryopickError("config must be a mapping of keys to values", path)
    return data


__all__ = [
    "HeatmapConfig",
    "ModelConfig",
    "PickConfig",
    "PreprocessConfig",
    "TrainConfig",
    "field",
    "from_dict",
    "load_yaml",
    "to_dict",
]
