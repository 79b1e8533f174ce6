"""The file store's audit log on disk: `audit.log`, rotated by size, and its reading.

Owns the files (blocking I/O; the store runs it in threads):

- `append(data)` adds whole JSON lines (`controller.audit.encode`) to `audit.log` with one
  O_APPEND write, fsynced. A line torn by a crash is ended before the next append (it is
  skipped on reading). When the file would grow past `max_bytes`, it is first rotated:
  `audit.log.N-1` -> `audit.log.N` ... `audit.log` -> `audit.log.1` (renames, then the
  directory is fsynced), and files past `audit.log.<keep>` are deleted. So at most
  `keep + 1` files of about `max_bytes` each are on disk, and a batch larger than
  `max_bytes` goes whole into a fresh file (a batch is never split).
- `tail(limit)` gives the last `limit` lines across `audit.log` and the rotated files,
  oldest first, reading each file backwards from its end.

Rules: only whole lines are written; nothing but rotation renames or deletes a file.
Errors are OSError; the store turns them into StoreError naming the file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final

CHUNK: Final = 64 * 1024  # bytes read at a time from the end of a file


class AuditFile:
    """`path` (audit.log) and its rotated files `path.1` .. `path.<keep>`."""

    __slots__ = ("_keep", "_max", "path")

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        if max_bytes < 1 or keep < 1:
            raise ValueError(f"max_bytes and keep must be at least 1, got {max_bytes}, {keep}")
        self.path = path
        self._max = max_bytes
        self._keep = keep

    def rotated(self, n: int) -> Path:
        """The n-th rotated file (1 is the newest)."""
        return self.path.with_name(f"{self.path.name}.{n}")

    def files(self) -> list[Path]:
        """The files that exist, newest first: audit.log, audit.log.1, ..."""
        out = [self.path] if self.path.exists() else []
        n = 1
        while self.rotated(n).exists():
            out.append(self.rotated(n))
            n += 1
        return out

    def append(self, data: bytes) -> None:
        """Append whole lines, rotating first if the file would grow past max_bytes.

        Raises:
            OSError: not (or perhaps partly) written.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and size + len(data) > self._max:
                os.close(fd)
                fd = -1
                self._rotate()
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
                size = 0
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # end a line torn by a crash; it is skipped on reading
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            if fd >= 0:
                os.close(fd)

    def tail(self, limit: int) -> list[bytes]:
        """The last `limit` non-empty lines across the files, oldest first.

        Raises:
            OSError: a file cannot be read.
        """
        if limit <= 0:
            return []
        lines: list[bytes] = []
        n = 0
        while len(lines) < limit:
            path = self.path if n == 0 else self.rotated(n)
            try:
                got = _tail(path, limit - len(lines))
            except FileNotFoundError:
                if n > 0:
                    break  # rotated files are numbered without gaps
                got = []
            lines = got + lines
            n += 1
        return lines[-limit:]

    def _rotate(self) -> None:
        n = self._keep + 1
        while self.rotated(n).exists():  # beyond keep (keep was lowered): delete
            self.rotated(n).unlink()
            n += 1
        for i in range(self._keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.rotated(i), self.rotated(i + 1))
        os.replace(self.path, self.rotated(1))
        _fsync_dir(self.path.parent)


def _tail(path: Path, limit: int) -> list[bytes]:
    """The last `limit` non-empty lines of one file, reading backwards."""
    with open(path, "rb") as f:
        pos = f.seek(0, os.SEEK_END)
        data = b""
        while pos > 0 and data.count(b"\n") <= limit:
            step = min(CHUNK, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.split(b"\n")
    if pos > 0:
        lines = lines[1:]  # the first is cut
    return [line for line in lines if line.strip()][-limit:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
