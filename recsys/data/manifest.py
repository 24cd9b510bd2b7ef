"""The manifest of a prepared dataset, input fingerprints, and all-or-nothing output folders.

``manifest.json`` records what a prepared dataset was made from (every source file with its size and
sha256), how (the configuration), and what came out (row counts, vocabulary sizes, split boundaries, days).
``prepare`` compares it with the inputs to skip work when nothing changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recsys import __version__

FORMAT = "recsys.prepared/1"
MANIFEST = "manifest.json"
_CHUNK = 1 << 22


@dataclass
class SourceFile:
    """One input file: name relative to the raw folder, size, modification time and content hash."""

    name: str
    size: int
    mtime_ns: int
    sha256: str = ""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)  # releases the GIL: hashing overlaps with polars work in other threads
    return h.hexdigest()


def stat_files(paths: list[Path], root: Path) -> list[SourceFile]:
    out = []
    for p in paths:
        st = p.stat()
        out.append(SourceFile(str(p.relative_to(root)) if p.is_relative_to(root) else str(p), st.st_size, st.st_mtime_ns))
    return out


class BackgroundHashes:
    """sha256 of input files computed in a thread while the pipeline runs."""

    def __init__(self, paths: list[Path], *, start: bool = True) -> None:
        self._paths = paths
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        self._futures: list[Future[str]] = []
        if start:
            self.start()

    def start(self) -> None:
        if not self._futures:
            self._futures = [self._pool.submit(sha256_of, p) for p in self._paths]

    def result(self) -> list[str]:
        self.start()
        try:
            return [f.result() for f in self._futures]
        finally:
            self._pool.shutdown()

    def cancel(self) -> None:
        for f in self._futures:
            f.cancel()
        self._pool.shutdown(wait=True)


@dataclass
class Manifest:
    dataset: str
    config: dict[str, Any]
    inputs: list[SourceFile]
    raw_root: str
    actions: list[str]
    rows: dict[str, int]
    vocab_sizes: dict[str, int]
    split: dict[str, Any]
    days: dict[str, int]
    columns: dict[str, dict[str, str]]
    tie_rule: str
    format: str = FORMAT
    toolkit_version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self, folder: Path) -> None:
        atomic_write_text(folder / MANIFEST, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        data = json.loads((Path(folder) / MANIFEST).read_text())
        data["inputs"] = [SourceFile(**f) for f in data["inputs"]]
        return cls(**data)

    def matches(self, config: dict[str, Any], current: list[SourceFile], root: Path) -> bool:
        """True when this manifest was made by this toolkit format from the same config and inputs.

        Size and mtime equal -> unchanged; size equal but mtime different -> decided by sha256.
        """
        if self.format != FORMAT or self.config != config or len(self.inputs) != len(current):
            return False
        for old, new in zip(self.inputs, current, strict=True):
            if old.name != new.name or old.size != new.size:
                return False
            if old.mtime_ns != new.mtime_ns and old.sha256 != sha256_of(root / new.name):
                return False
        return True


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to write into; on success it replaces ``out`` in one rename.

    On any exception the temporary folder is removed and ``out`` is left as it was: no half-written
    output is ever visible under ``out``.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
