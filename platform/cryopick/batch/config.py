"""Settings of a batch run (picking a whole data set): what decides the picks and how Ray spreads the work."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from cryopick.config import PickConfig, from_dict, to_dict
from cryopick.errors import CryopickError
from cryopick.inference.mask import MaskConfig
from cryopick.io.coords import FORMATS


@dataclass
class BatchConfig:
    """Everything that decides a batch run's picks, plus how the Ray engine spreads the work."""

    RETIRED: ClassVar[dict[str, str]] = {"torch_threads": "was removed: each worker uses as many threads as its cpus_per_worker"}

    format: str = "star"  # a coordinate format of cryopick.io.coords.FORMATS
    box_size: float | None = None  # .box output; default 1.5 x the model's particle diameter
    pixel_size: float | None = None  # Å/px overriding the headers
    device: str = "auto"  # torch device in each worker: auto | cpu | cuda
    pick: PickConfig = field(default_factory=PickConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    workers: int = 0  # Ray actors; 0 = one per GPU, else one per cpus_per_worker CPUs
    cpus_per_worker: float = 1.0  # Ray CPUs reserved per actor (0.5 leaves room on a 2-CPU box)
    gpus_per_worker: float | None = None  # None = 1 when the cluster has GPUs, else 0
    batch_size: int = 4  # micrographs per actor call (and per Ray Data block)
    max_task_retries: int = 3  # retries of a batch whose actor died; then each is retried alone

    def validate(self, where: str = "campaign") -> None:
        if self.format not in FORMATS:
            raise CryopickError(f"{where}.format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        for key in ("box_size", "pixel_size"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise CryopickError(f"{where}.{key} must be positive, got {value!r}")
        if self.workers < 0:
            raise CryopickError(f"{where}.workers must be >= 0, got {self.workers}")
        if not self.cpus_per_worker > 0:
            raise CryopickError(f"{where}.cpus_per_worker must be positive, got {self.cpus_per_worker}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise CryopickError(f"{where}.gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        if self.batch_size < 1:
            raise CryopickError(f"{where}.batch_size must be >= 1, got {self.batch_size}")
        if self.max_task_retries < 0:
            raise CryopickError(f"{where}.max_task_retries must be >= 0, got {self.max_task_retries}")

    def decisive(self) -> dict[str, Any]:
        """The settings that change the picks (engine settings such as ``workers`` do not). ``pick.amp`` is left out:
        the precision, like the device, is the machine's, and a run resumed on other hardware keeps what it picked."""
        pick = {k: v for k, v in to_dict(self.pick).items() if k != "amp"}
        return {"format": self.format, "box_size": self.box_size, "pixel_size": self.pixel_size,
                "pick": pick, "mask": to_dict(self.mask)}


def batch_config(data: dict[str, Any] | None) -> BatchConfig:
    """Validated :class:`BatchConfig` from a dict (YAML section); errors name the key."""
    return from_dict(BatchConfig, data, "campaign")
