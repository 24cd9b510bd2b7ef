"""The serving artifact on disk: a folder with a JSON manifest, ``torch.export`` programs without their
weights, the weights in safetensors, and the model's side data. Written atomically; verified on load.

    manifest.json          format, model, precision, config, programs (inputs/outputs), versions, and the
                           sha256 and size of every other file
    weights.safetensors    every program's parameters and buffers by name (FP8 weights as float8_e4m3fn
                           with their fp32 scales)
    <program>.pt2          torch.export programs, weights stripped (each tensor saved empty)
    ...                    model side data (GEMs: semantic_ids/, item_author.safetensors)

Nothing is unpickled on load. ``torch.export.load`` would unpickle a tensor marked ``use_pickle`` (tensor
subclasses), torchbind/opaque constants and non-empty sample inputs (falling back to
``weights_only=False``); :func:`check_program_archive` refuses any archive that has one of those before
``torch.export.load`` sees it, after the checksums matched the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "recsys-serving-artifact"
FORMAT_VERSION = 1


class ArtifactError(ValueError):
    """A serving artifact that is missing, tampered with, or made for another toolkit or torch."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def torch_minor(version: str) -> str:
    """``2.14.1+cu130`` -> ``2.14`` (also for the toolkit's version)."""
    return ".".join(version.split("+")[0].split(".")[:2])


def save_program(program: torch.export.ExportedProgram, path: Path) -> dict[str, torch.Tensor]:
    """Save ``program`` without its weights (each state tensor replaced by an empty one of its dtype) and
    without sample inputs; returns the weights taken out."""
    weights = {k: v.detach() for k, v in program.state_dict.items()}
    params = set(program.graph_signature.parameters)
    for name, value in weights.items():
        empty = torch.empty(0, dtype=value.dtype)
        program.state_dict[name] = nn.Parameter(empty, requires_grad=False) if name in params else empty
    program._example_inputs = None
    try:
        torch.export.save(program, str(path))
    finally:
        for name, value in weights.items():
            program.state_dict[name] = nn.Parameter(value, requires_grad=False) if name in params else value
    return weights


def check_program_archive(path: Path) -> None:
    """Refuse a ``.pt2`` whose loading would unpickle anything (see the module docstring)."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise ArtifactError(f"{path}: not a torch.export archive ({e})") from None
    with archive:
        for name in archive.namelist():
            if "/data/sample_inputs/" in name and archive.getinfo(name).file_size > 0:
                raise ArtifactError(f"{path}: {name} holds sample inputs (pickled); refusing to load it")
            if name.endswith("_config.json") and ("/data/weights/" in name or "/data/constants/" in name):
                config = json.loads(archive.read(name)).get("config", {})
                for key, entry in config.items():
                    if entry.get("use_pickle") or entry.get("constant_type", "tensor").lower() not in ("tensor",):
                        raise ArtifactError(f"{path}: entry {key!r} of {name} would be unpickled; refusing to load it")


def load_program(path: Path, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Load a program saved by :func:`save_program` and put its weights back: a callable module."""
    check_program_archive(path)
    program = torch.export.load(str(path))
    params = set(program.graph_signature.parameters)
    for name, empty in list(program.state_dict.items()):
        if name not in weights:
            raise ArtifactError(f"{path}: weight {name!r} is missing from weights.safetensors")
        value = weights[name]
        if value.dtype != empty.dtype:
            raise ArtifactError(f"{path}: weight {name!r} is {value.dtype}, the program expects {empty.dtype}")
        program.state_dict[name] = nn.Parameter(value, requires_grad=False) if name in params else value
    return program.module()


@contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``out`` to write an artifact into; removed if anything fails (the
    caller commits it with :func:`write_manifest_and_commit`)."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_manifest_and_commit(tmp: Path, out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Checksum every file of ``tmp``, write the manifest, and move ``tmp`` to ``out`` (replacing it);
    returns the manifest as written."""
    files = {}
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        rel = path.relative_to(tmp).as_posix()
        files[rel] = {"sha256": sha256(path), "bytes": path.stat().st_size}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "files": files}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)
    return manifest


def read_verified_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of an artifact whose files all match their checksums, made for this torch's version."""
    import recsys

    path = folder / "manifest.json"
    if not path.is_file():
        raise ArtifactError(f"{folder}: no manifest.json (not a recsys serving artifact)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format {manifest.get('format')!r} v{manifest.get('format_version')!r}, "
                            f"expected {FORMAT!r} v{FORMAT_VERSION}")
    made = manifest.get("versions", {})
    if torch_minor(made.get("torch", "?")) != torch_minor(torch.__version__):
        raise ArtifactError(f"{path}: exported with torch {made.get('torch')}, this is torch {torch.__version__} "
                            f"(torch.export programs need the same minor version); re-export it")
    if torch_minor(made.get("recsys", "?")) != torch_minor(recsys.__version__):
        raise ArtifactError(f"{path}: made by recsys {made.get('recsys')}, this is recsys {recsys.__version__}")
    for rel, entry in manifest.get("files", {}).items():
        file = folder / rel
        if not file.is_file():
            raise ArtifactError(f"{folder}: {rel} is listed in the manifest but missing")
        if file.stat().st_size != entry["bytes"] or sha256(file) != entry["sha256"]:
            raise ArtifactError(f"{folder}: {rel} does not match its sha256 in the manifest (modified or corrupt)")
    listed = set(manifest.get("files", {})) | {"manifest.json"}
    extra = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    extra = [p for p in extra if p not in listed]
    if extra:
        raise ArtifactError(f"{folder}: files not in the manifest: {extra[:5]}")
    return manifest
