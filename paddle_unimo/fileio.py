"""The one I/O layer: the ``DataError`` every reader raises, the JSON-lines reader, and atomic writers of
files and folders.

Readers name the place of a problem as ``file:line``; files saved by Windows editors start with a UTF-8 byte
order mark, which is accepted. Writers write to a temporary name beside the target, sync it and rename it
over the target, so a reader (or a crash) never sees a half-written file or folder.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import uuid
from typing import Callable, Iterable, Iterator, Optional, Tuple, Union

BOM = "\ufeff"


class DataError(ValueError):
    """Bad input data or configuration; the message starts with ``file:line`` (or ``file``) and says what."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first non-blank line of an error's message, at most ``limit`` characters: a library's own error (paddle's
    run several lines with a C++ trace) inside one line of ours."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), "")[:limit]


def read_text_lines(path) -> Iterator[Tuple[str, str]]:
    """``(file:line, text)`` for every non-blank line of a UTF-8 file, without its line ending; a leading byte
    order mark is dropped. Bytes that are not UTF-8 are a ``DataError`` naming the line."""
    for line_no, _, text in text_lines_at(path):
        yield f"{os.fspath(path)}:{line_no}", text


def text_lines_at(path) -> Iterator[Tuple[int, int, str]]:
    """``(line number, byte offset, text)`` for every non-blank line, as ``read_text_lines`` reads them; the offset
    finds the line again (``read_line_at``) without keeping its text."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, not a file")
    offset = 0
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            text = _decode_line(raw, path, line_no, offset)
            if text.strip():
                yield line_no, offset, text
            offset += len(raw)


def read_line_at(path, offset: int, line_no: int = 0) -> str:
    """The line starting at byte ``offset`` of a UTF-8 file (``text_lines_at``'s offset), without its line ending."""
    with open(path, "rb") as f:
        f.seek(offset)
        return _decode_line(f.readline(), os.fspath(path), line_no, offset)


def _decode_line(raw: bytes, path: str, line_no: int, offset: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{line_no}: not UTF-8 ({e.reason} at byte {e.start}); another encoding (GBK?) "
                        "needs converting first, e.g. iconv -f gbk -t utf-8") from None
    if offset == 0 and text.startswith(BOM):
        text = text[1:]
    return text.rstrip("\r\n")


JSON_LINES_HINT = " (a JSON-lines file holds one JSON object per line, not one JSON document)"


def parse_json_line(where: str, text: str, kind: type = dict):
    """One JSON value of a JSON-lines file; a ``DataError`` naming ``where`` when malformed or not ``kind``."""
    lines_hint = JSON_LINES_HINT
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        document = text.strip() in ("[", "{", "[{")  # the start of a pretty-printed JSON document
        raise DataError(f"{where}: malformed JSON ({e.msg}{' ' if e.msg.endswith(' at') else ', '}column "
                        f"{e.colno}){lines_hint if document else ''}") from None
    if kind is not None and not isinstance(value, kind):
        raise DataError(f"{where}: expected a JSON {'object' if kind is dict else kind.__name__}, "
                        f"got {type(value).__name__}{lines_hint if kind is dict and isinstance(value, list) else ''}")
    return value


def read_jsonl(path, kind: type = dict) -> Iterator[Tuple[str, object]]:
    """``(file:line, object)`` for every non-blank line of a JSON-lines file (objects unless ``kind`` says
    otherwise; None accepts any JSON value)."""
    for where, text in read_text_lines(path):
        yield where, parse_json_line(where, text, kind)


def read_json(path, what: str = "JSON file"):
    """A whole JSON file; a malformed or missing one is a ``DataError`` naming the file."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed {what} ({e.msg}, column {e.colno})") from None


# ---- writing ---------------------------------------------------------------------------------------------

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


def atomic_save(path, write: Callable[[str], None]) -> None:
    """``write(tmp_path)`` writes a file (e.g. ``paddle.save``) that is then renamed over ``path``; on failure
    the temporary file is removed and ``path`` is untouched."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(os.path.dirname(path) or ".")


def atomic_write(path, data: Union[str, bytes, Iterable[Union[str, bytes]]]) -> None:
    """Writes text or bytes (or an iterable of chunks) to ``path.tmp``, syncs it and renames it over ``path``."""
    chunks = [data] if isinstance(data, (str, bytes)) else data

    def write(tmp):
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)
            f.flush()
            os.fsync(f.fileno())
    atomic_save(path, write)


def write_json(path, obj, indent: int = 1) -> None:
    """``obj`` as JSON, atomically. JSON has no NaN or infinity: a non-finite number (an undefined metric, e.g.
    the Pearson correlation of constant predictions) is written as null, so every JSON reader reads the file."""
    atomic_write(path, json.dumps(finite_or_none(obj), ensure_ascii=False, indent=indent, allow_nan=False))


def finite_or_none(obj):
    """``obj`` with every non-finite float (in dicts, lists and tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def write_jsonl(path, rows: Iterable[dict]) -> None:
    """One JSON object a line, atomically; non-finite numbers as null (``write_json``)."""
    atomic_write(path, (json.dumps(finite_or_none(row), ensure_ascii=False, allow_nan=False) + "\n" for row in rows))


@contextlib.contextmanager
def atomic_dir(path):
    """Yields a new temporary folder beside ``path``; on success it replaces ``path`` (the old folder stays
    whole, as ``path.old``, until the new one is in place), on failure it is removed and ``path`` is untouched.

    The temporary folder is made with ``os.mkdir`` so it gets the usual mode (umask), not mkdtemp's 0700. An
    empty path, the current folder or a folder holding it is refused (a ``DataError``): replacing it would take the
    working folder with it.
    """
    if not os.fspath(path):
        raise DataError("an output folder must be named (got an empty path)")
    path = os.path.abspath(os.fspath(path))
    here = os.path.abspath(os.getcwd())
    if os.path.commonpath([path, here]) == path:
        raise DataError(f"{path}: the current folder or one holding it cannot be replaced by an output folder; "
                        "name a folder of its own")
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{name}.{uuid.uuid4().hex[:12]}.tmp")  # _TEMPORARY
    os.mkdir(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path + ".old"  # a crash between the two renames leaves the previous folder here (see recover_dir)
    had_old = os.path.exists(path)
    if had_old:
        shutil.rmtree(old, ignore_errors=True)
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if had_old:
            os.rename(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if had_old:
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(parent)


LOCK_NAME = ".lock"
_TEMPORARY = re.compile(r"\.(.+)\.[0-9a-f]{12}\.tmp")  # atomic_dir's temporary folder for the folder group(1)


@contextlib.contextmanager
def folder_lock(path, leftovers: Iterable[str] = ()):
    """Holds ``path/.lock`` (an exclusive ``flock``) for the block: a second run into the same output folder stops
    with a ``DataError`` naming the process that holds it. The system releases the lock when that process ends,
    even when it is killed. Holding it, removes the temporary folders ``atomic_dir`` left for the folders named in
    ``leftovers`` (``path/<name>``) when a process writing them was killed: a checkpoint cut short, which only a
    holder of the lock writes, so no running process is writing it then."""
    import fcntl
    import sys
    import time
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    f = open(os.path.join(path, LOCK_NAME), "a+", encoding="utf-8")
    try:
        locked = True
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise DataError(f"{path}: in use by {holder}; wait for it to end (or stop it), or choose another "
                            "output folder") from None
        except OSError as e:  # a file system without flock (some NFS, Lustre or FUSE mounts)
            import logging
            logging.getLogger(__name__).warning("%s: cannot be locked (%s): nothing stops a second run into it",
                                                path, e.strerror or e)
            locked = False
        if locked:
            f.seek(0)
            f.truncate()
            command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
            f.write(f"process {os.getpid()} ({command[:200]}), since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            f.flush()
            for name in os.listdir(path):
                if (match := _TEMPORARY.fullmatch(name)) and match.group(1) in leftovers:
                    shutil.rmtree(os.path.join(path, name), ignore_errors=True)
        yield
    finally:
        f.close()


def lock_holder(path) -> Optional[str]:
    """Who holds ``path``'s ``folder_lock`` (``process <pid> (<command>), since <time>``), or None when no process
    does (or the folder has no lock file)."""
    import fcntl
    lock = os.path.join(os.fspath(path), LOCK_NAME)
    if not os.path.isfile(lock):
        return None
    with open(lock, encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read().strip() or "another process"
        except OSError:  # no flock here: nothing can be known
            return None
    return None


def recover_dir(path) -> str:
    """``path``, or ``path.old`` when a crash between the two renames of ``atomic_dir`` left only that."""
    path = os.fspath(path)
    if not os.path.isdir(path) and os.path.isdir(path + ".old"):
        return path + ".old"
    return path
