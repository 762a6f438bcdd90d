"""The one way files are written: to a temporary name beside the target, synced, then renamed over it, so a
reader (or a crash) never sees a half-written file."""
from __future__ import annotations

import json
import os
from typing import Iterable, Union


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, data: Union[str, bytes, Iterable[Union[str, bytes]]]) -> None:
    """Writes text or bytes (or an iterable of chunks) to ``path.tmp``, syncs it and renames it over ``path``."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    chunks = [data] if isinstance(data, (str, bytes)) else data
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(os.path.dirname(path) or ".")


def write_json(path, obj, indent: int = 1) -> None:
    atomic_write(path, json.dumps(obj, ensure_ascii=False, indent=indent))


def write_jsonl(path, rows: Iterable[dict]) -> None:
    atomic_write(path, (json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
