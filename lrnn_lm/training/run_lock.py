"""One process per run folder: an exclusive OS file lock on ``out_dir`` for the life of the run.

The lock file sits next to the folder (``.<name>.lock`` in its parent), not inside it: a fresh run must find the
folder empty, and ``--overwrite=move`` renames the whole folder aside, which must not carry the lock away. The lock
is ``fcntl.flock`` on that file, so the kernel drops it when the process dies, however it dies: a lock file left by
a killed run blocks nothing. The file holds the holder's PID and host, only to name them in the refusal.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from .run_dir import RunDirError


def lock_path(out: Path) -> Path:
    out = Path(os.path.abspath(out))
    return out.with_name(f".{out.name}.lock")


class RunLock:
    """Held while the object lives (or until :meth:`release`); :meth:`acquire` refuses when another holds it."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = lock_path(self.out)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirError(
                f"out_dir {self.out} is in use by {self._holder()} (lock {self.path}); two processes never share "
                "a run folder. Wait for it to finish or stop it, or use another --out_dir."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def _holder(self) -> str:
        # The holder writes its PID right after locking; give it a moment when we read between the two.
        for _ in range(20):
            try:
                text = self.path.read_text().split()
            except OSError:
                text = []
            if text:
                host = f" on {text[1]}" if len(text) > 1 else ""
                return f"process {text[0]}{host}"
            time.sleep(0.05)
        return "another process"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (deleting it would race a new locker)
            self._fd = None

    def __del__(self) -> None:
        self.release()


def lock_out_dir(out: Path, accelerator) -> RunLock | None:
    """Lock ``out`` for this run: the main process takes the lock, every process learns whether it got it (the
    broadcast is also the barrier the others wait on), and all refuse together when another run holds it."""
    lock, error = None, None
    if accelerator.is_main_process:
        try:
            lock = RunLock(out).acquire()
        except RunDirError as e:
            error = str(e)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        error = broadcast_object_list([error])[0]
    if error is not None:
        raise RunDirError(error)
    return lock
