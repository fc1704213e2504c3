"""A lock file beside each surface file, so two runs never write the same surface.

`<surf_file>.lock` is created with O_EXCL and holds the owner's host, pid and start time. The
owner touches it every HEARTBEAT seconds. Another run treats the lock as stale, removes it and goes
on when the owner is gone: on the same host, when its pid no longer exists; on another host (a
shared file system), when the lock has not been touched for STALE_AFTER seconds.
"""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from typing import Any

from landscape.errors import UserError

HEARTBEAT = 10.0
STALE_AFTER = 60.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_owner(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def is_stale(path: str, owner: dict[str, Any]) -> bool:
    """A killed owner's lock: dead pid on this host, or no heartbeat for STALE_AFTER seconds."""
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        return not pid_alive(owner["pid"])
    try:
        return time.time() - os.path.getmtime(path) > STALE_AFTER
    except OSError:
        return True


class SurfaceLock:
    def __init__(self, surf_file: str) -> None:
        self.path = surf_file + ".lock"
        self._stop = threading.Event()
        self._thread = None

    def acquire(self) -> SurfaceLock:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = read_owner(self.path)
                if not is_stale(self.path, owner):
                    raise UserError(f"'{self.path[:-5]}' is being written by another run "
                                    f"(lock {self.path}: pid {owner.get('pid')} on {owner.get('host')}, "
                                    f"since {owner.get('started')}); wait for it, or delete the lock if "
                                    "that run is gone") from None
                try:
                    os.remove(self.path)  # stale: its owner was killed
                except FileNotFoundError:
                    pass
                continue
            except OSError as e:
                raise UserError(f"cannot create lock '{self.path}': {e.strerror}") from None
            with os.fdopen(fd, "w") as f:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S")}, f)
            self._remove_dead_writers_temps()
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
            return self
        raise UserError(f"cannot take lock '{self.path}' (another run keeps re-creating it)")

    def _remove_dead_writers_temps(self) -> None:
        """A writer killed mid-write (kill -9, a node lost) leaves `<surf_file>.tmp<pid>` behind; the
        surface itself is intact (writes are renamed into place). Whoever holds the lock owns the
        surface, so every such temp file is a dead writer's, and is removed."""
        surf = self.path[:-5]
        folder, name = os.path.split(os.path.abspath(surf))
        pattern = re.compile(re.escape(name) + r"\.tmp\d+$")
        try:
            entries = os.listdir(folder)
        except OSError:
            return
        for entry in entries:
            if pattern.match(entry):
                try:
                    os.remove(os.path.join(folder, entry))
                except OSError:
                    pass

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread = None
            try:
                if read_owner(self.path).get("pid") == os.getpid():
                    os.remove(self.path)
            except OSError:
                pass
