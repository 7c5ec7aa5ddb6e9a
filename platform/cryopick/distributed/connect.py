"""The one way cryopick connects to Ray: a running cluster, or a new local Ray for this process.

Every caller (self-training, batch picking, Tune, the pipelines and benchmarks) goes through
:func:`connect` or :func:`ray_session`, so the rules live here once:

- ``address`` (or ``$RAY_ADDRESS``, which ``ray job submit`` sets) joins that cluster with its own
  resources; passing ``num_cpus`` there raises in Ray, so it is passed only to a new local Ray;
- a new local Ray is started with ``address="local"`` (never someone else's cluster on this host),
  without the dashboard, with token auth off unless the user set ``RAY_AUTH_MODE`` (Ray 2.60 turns it
  on for new clusters and a ``ray job submit`` client then fails), and with :data:`CPU_ENV` in every
  worker so PyTorch's OpenMP threads do not spin and starve each other on small machines;
- whoever started Ray shuts it down (:func:`ray_session`), so no Ray processes outlive the command.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from cryopick.runtime import CPU_ENV


def connect(address: str | None = None, num_cpus: int | None = None, *, quiet: bool = False) -> bool:
    """Connect this process to Ray once; True if this call started it (then the caller shuts it down).

    Args:
        address: a cluster address; None uses ``$RAY_ADDRESS`` when set, else starts a local Ray.
        num_cpus: CPUs of a new local Ray (None: all of this machine's); ignored for a cluster.
        quiet: keep workers' output off the driver's terminal.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=not quiet)
        return True
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=not quiet,
             runtime_env={"env_vars": dict(CPU_ENV)})
    return True


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, *, quiet: bool = False) -> Iterator[bool]:
    """``with ray_session(...):`` connect for the block; shut Ray down after it if the block's connect started it."""
    started = connect(address, num_cpus, quiet=quiet)
    try:
        yield started
    finally:
        if started:
            import ray

            ray.shutdown()


def cluster_has_gpus() -> bool:
    """Whether the connected cluster offers any GPU."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0)) > 0


def shutdown() -> None:
    """Shut this process's Ray connection down (for callers that used :func:`connect` directly)."""
    import ray

    ray.shutdown()
