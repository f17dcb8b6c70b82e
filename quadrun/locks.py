"""One process at a time in a run or sweep folder (torch-free).

`hold(folder, what)` takes an exclusive lock on `<folder>/.quadrun.lock` (fcntl.flock) for
the rest of the process, writing the holder's pid, host and start time into it. A second
process gets ConfigError naming the holder (one line, exit 2). The lock is the kernel's:
when the holder dies, however it dies, the lock is free again, so a lock left by a dead
process on this host is simply taken over. Holding the same folder twice in one process
is allowed (the CLI takes it before Hydra starts, the runner again inside the run).
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from quadrun.errors import ConfigError

LOCK = ".quadrun.lock"
_held: dict = {}        # resolved folder -> open file (kept open: the lock lives with it)


def holder(folder: Path) -> str:
    """Who holds the folder's lock, as written in the file ('' when unknown)."""
    try:
        return (Path(folder) / LOCK).read_text().strip()
    except OSError:
        return ""


def hold(folder: Path, what: str = "run") -> None:
    folder = Path(folder).resolve()
    if folder in _held:
        return
    folder.mkdir(parents=True, exist_ok=True)
    fh = open(os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644), "r+")  # not O_APPEND
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        who = holder(folder) or "another process"
        raise ConfigError(f"{what}: {folder} is in use by {who}; wait for it to finish or stop "
                          "it, then run the command again") from None
    text = (f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode()
    os.pwrite(fh.fileno(), text, 0)       # overwrite in place: the file is never empty
    os.ftruncate(fh.fileno(), len(text))
    _held[folder] = fh


def release(folder: Path) -> None:
    fh = _held.pop(Path(folder).resolve(), None)
    if fh is not None:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def is_held(folder: Path) -> bool:
    """Whether some live process holds the folder's lock (this one included)."""
    folder = Path(folder).resolve()
    if folder in _held:
        return True
    path = folder / LOCK
    if not path.exists():
        return False
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False
