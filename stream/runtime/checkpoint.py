"""Local state checkpoints: which changelog offset a partition's RocksDB state includes.

A checkpoint is written only after a clean close (the last transaction committed, every change in
the store and in the changelog). Opening a partition's state consumes its checkpoint: the file is
deleted before any new write, so a crash afterwards leaves no checkpoint and the next owner
rebuilds the store from the changelog instead of trusting a store that may hold uncommitted
writes. That is what makes "local checkpoint plus changelog tail" safe under exactly-once.
"""

from __future__ import annotations

import os
from pathlib import Path

from stream import wire

__all__ = ["read_checkpoint", "write_checkpoint", "consume_checkpoint", "VERSION"]

#: Checkpoints of other versions are not trusted (the store is rebuilt from the changelog).
#: Version 2: the changelog layout with event records (``stream.runtime.changelog``); a store
#: checkpointed by version 1 is replayed in full once, which migrates its old records.
VERSION = 2


def write_checkpoint(path: Path, topic: str, partition: int, offset: int) -> None:
    """Atomically record that the store includes ``topic[partition]`` up to ``offset`` (exclusive)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(wire.dumps({"topic": topic, "partition": partition, "offset": offset,
                             "version": VERSION}))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_checkpoint(path: Path, topic: str, partition: int) -> int | None:
    """The checkpointed offset, or None when absent, unreadable or for another topic/partition."""
    try:
        data = wire.loads(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    if (data.get("topic") != topic or data.get("partition") != partition
            or data.get("version") != VERSION):
        return None
    offset = data.get("offset")
    return offset if type(offset) is int and offset >= 0 else None


def consume_checkpoint(path: Path, topic: str, partition: int) -> int | None:
    """Read the checkpoint and delete it (durably) before the store is written again."""
    offset = read_checkpoint(path, topic, partition)
    if path.exists():
        path.unlink()
        _fsync_dir(path.parent)
    return offset


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
