"""One writer per output directory: an exclusive lock held for the whole run.

The lock is ``fcntl.flock`` on a small file that also records who holds it (pid, host, start time,
command), so a second run refuses with a message naming the holder. The kernel releases the lock
when its process ends, however it ends (even SIGKILL), so a lock left by a dead process is free and
the next run simply takes it over and rewrites the record.

On NFS, Linux clients implement ``flock`` with the server's byte-range locks (NFSv4, or NLM for v3),
so runs on different machines exclude each other when the server supports locking (most do; mounts
with ``nolock`` or ``local_lock=all`` lock per client only, and then two machines can both write).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from cryopick.errors import CryopickError

LOCK_NAME = ".cryopick.lock"


class OutputLock:
    """``with OutputLock(directory):`` hold ``directory``'s lock, or raise naming the run that holds it.

    Args:
        directory: the output directory (created if missing).
        lock_file: where the lock lives; default ``directory/.cryopick.lock``. A run that replaces its
            directory wholesale (``cryopick train``) keeps its lock beside the directory instead.
    """

    def __init__(self, directory: Path, lock_file: Path | None = None) -> None:
        self.directory = Path(directory)
        self.path = lock_file or self.directory / LOCK_NAME
        self._fh: IO[str] | None = None

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # held open for the lock's lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = _describe(fh.read())
            fh.close()
            raise CryopickError(f"in use by another cryopick run ({holder}); wait for it to finish or use another "
                                "directory", self.directory) from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                             "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:2]])}) + "\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        fh = self._fh
        self._fh = None
        if fh is not None:
            fh.truncate(0)
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()


def _describe(record: str) -> str:
    try:
        info = json.loads(record)
        return f"pid {info['pid']} on {info['host']}, started {info['started']}: {info['command']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
