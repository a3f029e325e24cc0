"""Small process-level helpers every entry point shares: atomic writes and torch's thread count.

An atomic write goes to a temporary name beside the target and is renamed into place, so a run
killed at any moment leaves either the old file (directory) or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:  # a full disk, a kill: the old file stays, and no temporary beside it
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


@contextlib.contextmanager
def atomic_dir(target: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty temporary directory; when the block ends without an error, it replaces
    `target`. With overwrite=False an existing `target` wins (another process built the same
    thing first) and the new copy is dropped."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists() and not overwrite:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = target.with_name(f".{target.name}.old{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError:  # a concurrent writer put its copy in place between our check and rename
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def append_jsonl(path: Path, row: dict) -> None:
    """One JSON line appended and flushed to disk: a kill leaves whole lines and at most a partial
    last one (readers drop it: `read_jsonl`)."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """The rows `append_jsonl` wrote; a last line cut short by a kill is dropped, any other bad line refused."""
    lines = Path(path).read_text().splitlines(keepends=True)
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not line.endswith("\n"):
                break  # the write a kill interrupted
            raise ValueError(f"{path}, line {i + 1}: not a JSON record; the file was changed by hand or another "
                             "program") from None
    return rows


def check_writable(directory: Path, setting: str, why: str) -> None:
    """Refuse, naming `setting`, a directory that cannot be created or written: a file is
    created in it and removed (permission bits alone do not say it: root writes anyway, and a
    read-only file system ignores them)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise ValueError(f"{setting}={directory}: cannot write there ({e.strerror or e}); {why}") from None


def set_threads(n: int | None) -> int:
    """torch's CPU threads: n, or every core this process may use when n is 0 or None (fastest
    for one job alone; pass 1 when several jobs share the cores). Returns the count set."""
    import torch

    n = n or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n
