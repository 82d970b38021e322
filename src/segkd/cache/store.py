"""On-disk layout of a teacher cache and its atomic completion.

    DIR/writing.pt             fingerprint of the cache being written (written first)
    DIR/<pool>/<index>.pt      one entry per image: {"name", "size": [H, W], "maps": {key: encoded map}}
    DIR/manifest.pt            fingerprint, pools, keys, codec, sizes, measured error (written LAST)

Every file goes through :func:`segkd.checkpoint_io.write_checkpoint` (temporary file, fsync, rename, a
SHA-256 checksum over the tensors) and is read with :func:`segkd.checkpoint_io.read_checkpoint`
(``weights_only=True``, checksum verified): entries are plain tensors, strings and numbers, so a cache
from someone else never runs code, and a damaged entry is refused naming its file. The cache is valid
only once ``manifest.pt`` exists, which the writer renames into place after the last entry: a killed
writer leaves entries and ``writing.pt`` but no manifest, which a run refuses and a second
``segkd cache-teacher`` resumes (:mod:`segkd.cache.writer`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from segkd.cache.codec import decode
from segkd.checkpoint_io import read_checkpoint, write_checkpoint

MANIFEST = "manifest.pt"
WRITING = "writing.pt"
FORMAT_VERSION = 1
# What a full disk keeps (the message of segkd.outputs.DiskFullError for a cache file).
KEPT_ON_FULL_DISK = ("the entries written so far are intact (free some space, then run segkd cache-teacher "
                     "again to finish the cache)")


class CacheIncompleteError(ValueError):
    """The folder holds no finished cache (no manifest): a writer was killed or never ran."""


def entry_path(root: Path, pool: str, index: int) -> Path:
    return root / pool / f"{index:07d}.pt"


def write_entry(root: Path, pool: str, index: int, entry: dict[str, Any]) -> Path:
    return write_checkpoint(entry, entry_path(root, pool, index), kept=KEPT_ON_FULL_DISK)


def entry_done(root: Path, pool: str, index: int) -> bool:
    """The entry file exists (files appear only complete: written to a temporary name, then renamed)."""
    return entry_path(root, pool, index).is_file()


class TeacherCache:
    """A finished cache folder: its manifest and its entries (decoded to float32 maps)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            writing = self.root / WRITING
            state = "a cache write was interrupted" if writing.is_file() else "no teacher cache there"
            raise CacheIncompleteError(
                f"teacher cache {self.root} is not complete ({state}); run `segkd cache-teacher CONFIG` "
                "to write or finish it"
            )
        self.manifest: dict[str, Any] = read_checkpoint(manifest)
        if self.manifest.get("format") != FORMAT_VERSION:
            found = self.manifest.get("format")
            raise CacheIncompleteError(f"teacher cache {self.root}: unknown format {found}")

    @property
    def keys(self) -> list[str]:
        return list(self.manifest["keys"])

    def count(self, pool: str) -> int:
        pools = self.manifest["pools"]
        if pool not in pools:
            raise CacheIncompleteError(
                f"teacher cache {self.root} holds no images of '{pool}' (it has {', '.join(pools)}); "
                f"write it with `segkd cache-teacher CONFIG --split {pool}`"
            )
        return int(pools[pool]["count"])

    def read(self, pool: str, index: int) -> dict[str, Any]:
        """The raw entry ``index`` of ``pool`` (name, size, encoded maps)."""
        return read_checkpoint(entry_path(self.root, pool, index))

    def maps(self, pool: str, index: int) -> tuple[str, tuple[int, int], dict[str, Tensor]]:
        """(sample name, source image (H, W), {key: float32 (C, h, w) map})."""
        entry = self.read(pool, index)
        maps = {key: decode(value) for key, value in entry["maps"].items()}
        return entry["name"], (int(entry["size"][0]), int(entry["size"][1])), maps
