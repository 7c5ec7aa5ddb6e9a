"""Process-level CPU settings, applied by entry points (CLI, pipelines, Ray workers) before torch loads.

PyTorch's CPU build uses GNU OpenMP, whose threads busy-wait between parallel regions. On a small
machine shared by several busy processes (Ray train workers, prediction actors, the driver) that
spinning starves the others: measured on this 2-core machine under load, one training step of a
width-8 U-Net took 6.2 s with the default policy and 0.37 s with ``OMP_WAIT_POLICY=PASSIVE``.
The variable is read when libgomp loads, so it must be set before ``import torch``.
"""

from __future__ import annotations

import os

CPU_ENV: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}


def configure_cpu_env() -> dict[str, str]:
    """Set :data:`CPU_ENV` in ``os.environ`` where the user has not; returns the values in effect."""
    for key, value in CPU_ENV.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in CPU_ENV}
