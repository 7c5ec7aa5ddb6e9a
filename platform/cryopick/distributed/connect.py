"""The one way cryopick connects to Ray: a running cluster, or a new local Ray for this process.

Every caller (self-training, batch picking, Tune, the pipelines and benchmarks) goes through
:func:`connect` or :func:`ray_session`, so the rules live here once:

- ``address`` (or ``$RAY_ADDRESS``, which ``ray job submit`` sets) joins that cluster with its own
  resources; passing ``num_cpus`` there raises in Ray, so it is passed only to a new local Ray;
- a new local Ray is started with ``address="local"`` (never someone else's cluster on this host),
  without the dashboard, with token auth off unless the user set ``RAY_AUTH_MODE`` (Ray 2.60 turns it
  on for new clusters and a ``ray job submit`` client then fails), and with :data:`CPU_ENV` in every
  worker so PyTorch's OpenMP threads do not spin and starve each other on small machines;
- whoever started Ray shuts it down (:func:`ray_session`), and a watchdog ends a local Ray whose driver was
  killed outright, so no Ray processes outlive the command.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from pathlib import Path

from cryopick.runtime import CPU_ENV


def connect(address: str | None = None, num_cpus: int | None = None, *, quiet: bool = False) -> bool:
    """Connect this process to Ray once; True if this call started it (then the caller shuts it down).

    Args:
        address: a cluster address; None uses ``$RAY_ADDRESS`` when set, else starts a local Ray.
        num_cpus: CPUs of a new local Ray (None: all of this machine's); ignored for a cluster.
        quiet: keep workers' output and Ray's own informational lines off the driver's terminal.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=not quiet, logging_level=logging.WARNING if quiet else logging.INFO)
        return True
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ctx = ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=not quiet,
                   logging_level=logging.WARNING if quiet else logging.INFO, runtime_env={"env_vars": dict(CPU_ENV)})
    session_dir = getattr(ctx, "address_info", {}).get("session_dir")  # a RayContext; the stubs say BaseContext
    if session_dir:
        _watch(Path(session_dir).name)
    return True


# Run beside a driver that started a local Ray: when the driver is gone without shutting Ray down
# (SIGKILL, an out-of-memory kill), end that Ray's processes (GCS, raylet; their workers follow the
# raylet), found by the session name in their command lines. Linux (/proc) only; elsewhere it idles.
_WATCHDOG = """
import os, signal, sys, time
driver, session = int(sys.argv[1]), sys.argv[2].encode()


def session_tree():
    # pid -> start time of the session's processes (GCS, raylet) and all they started (agents, workers,
    # renamed "ray::..." and without the session name), this watchdog excepted
    procs = {}
    for pid in filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else []):
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                procs[int(pid)] = (int(fields[1]), fields[19], fh.read())
        except (OSError, ValueError, IndexError):
            pass
    tree = {pid for pid, (_, _, cmd) in procs.items() if session in cmd} - {os.getpid()}
    while True:
        more = {pid for pid, (ppid, _, _) in procs.items() if ppid in tree} - tree
        if not more:
            return {pid: procs[pid][1] for pid in tree}
        tree |= more


seen = {}
while True:
    seen.update(session_tree())  # remembered while the tree is whole: orphans lose their parent links
    try:
        os.kill(driver, 0)
    except ProcessLookupError:
        break
    time.sleep(1.0)
for pid, started in seen.items():
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            if fh.read().rsplit(b")", 1)[1].split()[19] == started:  # the same process, not a reused pid
                os.kill(pid, signal.SIGKILL)
    except (OSError, IndexError):
        pass
"""


def _watch(session: str) -> None:
    """Start the watchdog that ends this Ray session's processes once this (driver) process is gone."""
    subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), session], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, *, quiet: bool = False) -> Iterator[bool]:
    """``with ray_session(...):`` connect for the block; shut Ray down after it if the block's connect started it.

    ``quiet``: besides the workers' output, the lines Ray's C++ core writes to this process's stderr
    (actor-restart notices of Ray Data's actor pools, shutdown notices) and the raylet's warnings Ray prints
    on stdout go to ``driver_stderr.log`` in the Ray session's log directory for the block; Python
    exceptions still reach the terminal after it.
    """
    started = connect(address, num_cpus, quiet=quiet)
    try:
        with _stderr_to_session_log(quiet):
            yield started
    finally:
        if started:
            import ray

            with _stderr_to_session_log(quiet):
                ray.shutdown()


@contextlib.contextmanager
def _stderr_to_session_log(quiet: bool) -> Iterator[None]:
    """Point file descriptor 2 at the Ray session's ``logs/driver_stderr.log`` for the block (when ``quiet``)."""
    import ray

    log_dir = None
    if quiet and ray.is_initialized():
        try:
            log_dir = Path(_session_dir()) / "logs"
        except Exception:  # noqa: BLE001 - no session directory known: leave stderr as it is
            log_dir = None
    if log_dir is None or not log_dir.is_dir():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log_dir / "driver_stderr.log", "ab") as fh:
        os.dup2(fh.fileno(), 2)
    stdout = sys.stdout
    aside = _RayLinesAside(stdout, sys.stderr)
    sys.stdout = aside  # a TextIO stand-in (write, flush, the rest passed through)
    try:
        yield
    finally:
        sys.stdout = stdout
        stdout.write(aside.pending)
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


class _RayLinesAside:
    """A stdout that passes every line through except those Ray prefixes with ``(raylet)``, which go to ``aside``."""

    def __init__(self, out: Any, aside: Any) -> None:
        self.out, self.aside, self.pending = out, aside, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            (self.aside if "(raylet)" in line[:24] else self.out).write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.out, name)


def _session_dir() -> str:
    """This Ray session's directory on the local node."""
    import ray

    return str(ray._private.worker.global_worker.node.get_session_dir_path())  # no public accessor in Ray 2.60


def cluster_has_gpus() -> bool:
    """Whether the connected cluster offers any GPU."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0)) > 0


def shutdown() -> None:
    """Shut this process's Ray connection down (for callers that used :func:`connect` directly)."""
    import ray

    ray.shutdown()
