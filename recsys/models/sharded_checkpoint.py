"""Sharded checkpoints of models whose embedding tables torchrec has sharded, loadable at any world size.

A checkpoint is a folder (Lightning's checkpoint path, e.g. ``last.ckpt/``)::

    meta.pt                               the Lightning checkpoint, every sharded tensor replaced by a
                                          placeholder {"__sharded__": key, "size": [...], "dtype": "..."}
    shards-00000-of-00002.safetensors     the rows rank 0 holds, one entry per local shard, with their
    shards-00001-of-00002.safetensors     global offsets in the file's metadata

Each rank writes only its own rows, so no rank ever holds a whole table. Loading reads, for each local
shard of the *new* sharding, the overlapping parts of the saved pieces (safetensors slices, read lazily):
a checkpoint of 2 processes resumes with 1 process, 4, or any plan, and :func:`consolidate` writes a plain
single-file checkpoint with whole tables (what ``recsys export`` and a single-process run read).

Nothing is unpickled: ``meta.pt`` is read with ``torch.load(weights_only=True)`` and the shards are
safetensors. The folder is written next to its final path and renamed into place once complete.

Example (2 ranks, a row-wise ``item`` table of 1,000 rows): rank 0 writes the piece
``state_dict/model.items.embeddings.item.weight`` at offsets ``[0, 0]`` (rows 0-499), rank 1 the one at
``[500, 0]``; resuming on 1 process, its single local shard ``[0, 0]`` of size ``[1000, dim]`` is filled
from both files.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

META = "meta.pt"
FUSED_KEY = "fused_embedding_optimizer"
_PLACEHOLDER = "__sharded__"


def _is_sharded(value: Any) -> bool:
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    return isinstance(value, ShardedTensor)


def _replace_sharded(obj: Any, prefix: str, pieces: list[tuple[str, list[int], torch.Tensor]]) -> Any:
    """``obj`` with every ShardedTensor replaced by a placeholder; its local shards appended to ``pieces``."""
    if isinstance(obj, Mapping):
        return {k: _replace_sharded(v, f"{prefix}/{k}" if prefix else str(k), pieces) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_sharded(v, f"{prefix}/{i}" if prefix else str(i), pieces) for i, v in enumerate(obj)]
    if _is_sharded(obj):
        for shard in obj.local_shards():
            pieces.append((prefix, list(shard.metadata.shard_offsets), shard.tensor.detach()))
        return {_PLACEHOLDER: prefix, "size": list(obj.size()), "dtype": str(obj.dtype).removeprefix("torch.")}
    return obj


def _is_placeholder(value: Any) -> bool:
    return isinstance(value, Mapping) and _PLACEHOLDER in value


def save(checkpoint: dict[str, Any], path: Path, *, rank: int, world_size: int, barrier: Callable[..., None]) -> None:
    """Write ``checkpoint`` as a sharded folder at ``path``; every rank calls this (collectively)."""
    path = Path(path)
    stage = path.with_name(f".{path.name}.partial")
    pieces: list[tuple[str, list[int], torch.Tensor]] = []
    meta = _replace_sharded(checkpoint, "", pieces)
    if rank == 0:
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
    barrier("sharded_checkpoint.stage")
    tensors, index = {}, {}
    for n, (key, offsets, tensor) in enumerate(pieces):
        name = f"{n}"
        tensors[name] = tensor.contiguous().clone()
        index[name] = {"key": key, "offsets": offsets}
    shard_file = stage / f"shards-{rank:05d}-of-{world_size:05d}.safetensors"
    save_file(tensors, str(shard_file), metadata={"index": json.dumps(index)})
    barrier("sharded_checkpoint.shards")
    if rank == 0:
        torch.save(meta, stage / META)
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists() or path.is_symlink():
            if path.is_dir() and not path.is_symlink():
                os.replace(path, old)
            else:
                path.unlink()
        os.replace(stage, path)
        shutil.rmtree(old, ignore_errors=True)
    barrier("sharded_checkpoint.done")


def remove(path: Path) -> None:
    """Delete a checkpoint written by :func:`save` (a folder) or a plain checkpoint file."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class ShardedCheckpoint:
    """A checkpoint folder of :func:`save` (or a plain checkpoint file), read lazily.

    ``meta`` is the Lightning checkpoint with placeholders for sharded tensors; :meth:`read` fills any
    region of a saved tensor from the pieces that overlap it.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.pieces: dict[str, list[tuple[Path, str, list[int], list[int]]]] = {}
        if self.path.is_dir():
            meta_file = self.path / META
            if not meta_file.exists():
                raise FileNotFoundError(f"{meta_file}: not found (expected a sharded checkpoint folder)")
            self.meta = torch.load(meta_file, map_location="cpu", weights_only=True)
            for shard_file in sorted(self.path.glob("shards-*.safetensors")):
                with safe_open(str(shard_file), framework="pt") as f:
                    index = json.loads((f.metadata() or {}).get("index", "{}"))
                    for name, entry in index.items():
                        size = list(f.get_slice(name).get_shape())
                        self.pieces.setdefault(entry["key"], []).append((shard_file, name, entry["offsets"], size))
        elif self.path.is_file():
            self.meta = torch.load(self.path, map_location="cpu", weights_only=True)
        else:
            raise FileNotFoundError(f"{self.path}: no checkpoint file or folder")

    def read(self, saved: Any, offsets: list[int], sizes: list[int], dtype: torch.dtype) -> torch.Tensor:
        """The region ``[offsets, offsets + sizes)`` of a saved tensor (a placeholder or a whole tensor)."""
        region = tuple(slice(o, o + s) for o, s in zip(offsets, sizes, strict=True))
        if isinstance(saved, torch.Tensor):
            if any(o + s > n for o, s, n in zip(offsets, sizes, saved.shape, strict=True)):
                raise ValueError(f"saved tensor of shape {list(saved.shape)} has no region {offsets} + {sizes}")
            return saved[region].to(dtype)
        if not _is_placeholder(saved):
            raise TypeError(f"expected a tensor or a sharded placeholder, got {type(saved).__name__}")
        key = saved[_PLACEHOLDER]
        out = torch.empty(sizes, dtype=dtype)
        covered = 0
        for shard_file, name, p_off, p_size in self.pieces.get(key, []):
            lo = [max(a, b) for a, b in zip(p_off, offsets, strict=True)]
            hi = [min(a + n, b + m) for a, n, b, m in zip(p_off, p_size, offsets, sizes, strict=True)]
            if any(h <= low for low, h in zip(lo, hi, strict=True)):
                continue
            with safe_open(str(shard_file), framework="pt") as f:
                part = f.get_slice(name)[tuple(slice(a - p, b - p) for a, b, p in zip(lo, hi, p_off, strict=True))]
            out[tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, offsets, strict=True))] = part.to(dtype)
            covered += part.numel()
        if covered != out.numel():
            raise ValueError(f"{self.path}: the saved pieces of {key!r} cover {covered} of the {out.numel()} values "
                             f"of region {offsets} + {sizes} (missing or overlapping shard files)")
        return out

    def full(self, saved: Any) -> torch.Tensor:
        """A whole saved tensor."""
        if isinstance(saved, torch.Tensor):
            return saved
        return self.read(saved, [0] * len(saved["size"]), list(saved["size"]), getattr(torch, saved["dtype"]))

    @torch.no_grad()
    def fill(self, target: Any, saved: Any, key: str) -> None:
        """Copy a saved tensor into ``target`` (a ShardedTensor's local shards, or a plain tensor)."""
        if _is_sharded(target):
            size = list(target.size())
            saved_size = saved["size"] if _is_placeholder(saved) else list(saved.shape)
            if saved_size != size:
                raise ValueError(f"{key}: saved shape {saved_size}, model shape {size}")
            for shard in target.local_shards():
                t = shard.tensor
                t.copy_(self.read(saved, list(shard.metadata.shard_offsets), list(t.shape), t.dtype))
            return
        value = self.full(saved) if _is_placeholder(saved) else saved
        if not isinstance(value, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise TypeError(f"{key}: cannot load {type(saved).__name__} into {type(target).__name__}")
        if value.shape != target.shape:
            raise ValueError(f"{key}: saved shape {list(value.shape)}, model shape {list(target.shape)}")
        target.copy_(value)

    def load_into(self, target: Mapping[str, Any], saved: Mapping[str, Any], module: torch.nn.Module, *,
                  strict: bool = True) -> None:
        """Load a saved ``state_dict`` into ``module`` whose current ``state_dict()`` is ``target``."""
        missing = sorted(set(target) - set(saved))
        unexpected = sorted(set(saved) - set(target))
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict mismatch for {type(module).__name__}: missing {missing}, unexpected {unexpected}")
        for key, value in target.items():
            if key in saved:
                self.fill(value, saved[key], key)

    def load_fused_optimizer(self, fused: Any, saved: Mapping[str, Any]) -> None:
        """Load the saved state of torchrec's fused embedding optimizer into ``fused`` (its states are views
        of fbgemm's buffers, so copying into ``fused.state_dict()`` restores them)."""
        target = fused.state_dict()["state"]
        saved_state = saved["state"]
        for param, states in target.items():
            if param not in saved_state:
                raise KeyError(f"no saved fused optimizer state for {param!r}")
            for name, value in states.items():
                if name not in saved_state[param]:
                    raise KeyError(f"no saved fused optimizer state {name!r} for {param!r}")
                self.fill(value, saved_state[param][name], f"{param}/{name}")


def consolidate(path: Path, out: Path) -> None:
    """Write the sharded checkpoint ``path`` as one plain checkpoint file ``out`` (whole tensors)."""
    ckpt = ShardedCheckpoint(path)

    def resolve(obj: Any) -> Any:
        if _is_placeholder(obj):
            return ckpt.full(obj)
        if isinstance(obj, Mapping):
            return {k: resolve(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [resolve(v) for v in obj]
        return obj

    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial")
    torch.save(resolve(ckpt.meta), tmp)
    os.replace(tmp, out)
