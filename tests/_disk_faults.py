"""A full disk for the tests of atomic writes: a file writer that fails after ten bytes."""

from __future__ import annotations

import errno
import os
from pathlib import Path


class FullDisk:
    """Stands in for ``open`` of a file segkd writes: ``write`` puts ten bytes on disk, then fails with
    ENOSPC as a full disk does."""

    def __init__(self, fd: int, path: Path | None = None) -> None:
        self.handle = os.fdopen(fd, "wb")

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def write(self, data: bytes) -> None:
        self.handle.write(bytes(data)[:10])
        self.handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")
