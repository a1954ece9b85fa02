"""Durable JSONL files: records appended one whole line at a time and fsync'd, files rewritten atomically.

A process killed while appending leaves at most one partial last line (no trailing newline);
:func:`drop_partial_line` removes it before the file is appended to again, so a kill loses at most the record
being written and never corrupts the ones before it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from textenv.files import default_mode


def encode_record(record: Mapping[str, Any]) -> bytes:
    """One JSONL line (UTF-8, ending in a newline); NaN and infinities are refused, as JSON has none."""
    return (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def append_records(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> int:
    """Append each record as one line with a single ``write`` on an ``O_APPEND`` descriptor, then ``fsync``.

    Every record is on disk before the next is written. Returns the number of records appended.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    count = 0
    try:
        for record in records:
            data = encode_record(record)
            while data:  # os.write may write less than asked
                data = data[os.write(fd, data) :]
            os.fsync(fd)
            count += 1
    finally:
        os.close(fd)
    return count


def write_records(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> int:
    """Replace ``path`` with ``records`` atomically: a temporary file in the same folder, fsync'd, renamed over
    it. Readers see the old file or the new one, never a mix. Returns the number of records written."""
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"cannot write {str(target)!r}: the folder {str(folder)!r} {what}")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    count = 0
    try:
        os.fchmod(fd, _file_mode(target))
        with os.fdopen(fd, "wb") as f:
            for record in records:
                f.write(encode_record(record))
                count += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _file_mode(target: Path) -> int:
    """The replaced file's permissions, or those a new file gets (mkstemp's own are owner-only)."""
    return target.stat().st_mode & 0o777 if target.exists() else default_mode()


def drop_partial_line(path: str | os.PathLike) -> int:
    """Cut a last line that has no newline (a write interrupted by a kill); return the bytes removed."""
    target = Path(path)
    if not target.exists():
        return 0
    with open(target, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # walk back to the last newline
        position, block = size, 4096
        while position > 0:
            start = max(0, position - block)
            f.seek(start)
            chunk = f.read(position - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            position = start
        else:
            keep = 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """``(line number from 1, raw bytes)`` of each line that is not blank (a UTF-8 BOM on line 1 removed)."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if raw.strip():
                yield number, raw
