"""A distilled memory: ``m`` real training chains, each with a learnable soft label per action and a
learnable weight, and how it is saved (per stage, for resuming) and written as a prepared dataset.

A memory folder is its source's prepared dataset (files hard-linked, or copied across file systems) plus
``memory.parquet`` (one row per slot: ``chain``, ``user``, ``item``, ``start``, ``soft_<action>`` ...,
``weight``, and with relaxed fields ``relaxed_<key>``: a list of ``V`` probabilities per slot, ``V`` the
key's vocabulary) and ``manifest.extra["memory"]`` (method, budget, slots, the source's fingerprint). Every
chain-ranking model trains on it through :class:`~recsys.data.chain_ranking.ChainDataModule` unchanged:
its training split is the memory's slots, validation and test are the source's.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from recsys.data.chain_ranking import RELAXED_PREFIX, ChainTables
from recsys.data.errors import DataError
from recsys.data.manifest import MANIFEST, Manifest, staged_folder
from recsys.data.prepared import PreparedDataset
from recsys.data.splits import SPLIT_NAMES
from recsys.distill.stream import ChainStream

MEMORY_FILE = "memory.parquet"
#: Where a new DIET slot's soft labels start: its hard labels clamped to [this, 1 - this].
LABEL_CLAMP = 0.05
_ONE = float(np.log(np.expm1(1.0)))  # softplus^-1(1): a new slot's weight logit


@dataclass
class Memory:
    """Slots as positions into the stream (:attr:`ChainStream.rows`), with their learnable parameters:
    soft labels, weights, and per relaxed field (DIET's soft one-hot option) logits over its ids."""

    positions: torch.Tensor  # [m] int64
    label_logits: torch.Tensor  # [m, K]
    weight_logits: torch.Tensor  # [m]
    field_logits: dict[str, torch.Tensor] = field(default_factory=dict)  # key -> [m, V]

    @classmethod
    def from_samples(cls, positions: np.ndarray | torch.Tensor, labels: torch.Tensor, smoothing: float = LABEL_CLAMP,
                     fields: dict[str, tuple[torch.Tensor, int]] | None = None, peak: float = 0.95) -> Memory:
        """New slots holding real samples: soft labels start at the (smoothed) hard labels, weights at 1, and
        each relaxed field in ``fields`` (``key -> (ids [m], vocabulary size)``) at ``peak`` on the sample's id
        and the rest spread evenly (see :func:`peaked_logits`).

        The symmetric clamp lifts a rare label's mean (a 3.4% label starts at 8%); smoothing towards each
        action's rate instead, which keeps the mean, was tried (commit b008e88) and trained the KuaiRand-format
        zoo worse from DIET's 1% memories on all three seeds (BENCHMARKS.md, DIET), so the clamp stays."""
        y = labels.float().clamp(smoothing, 1 - smoothing)
        relaxed = {k: peaked_logits(ids, size, peak) for k, (ids, size) in (fields or {}).items()}
        return cls(torch.as_tensor(positions, dtype=torch.long), torch.logit(y), torch.full((len(y),), _ONE), relaxed)

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @property
    def soft_labels(self) -> torch.Tensor:
        return torch.sigmoid(self.label_logits)

    @property
    def weights(self) -> torch.Tensor:
        """Positive weights, mean 1 (only their ratios matter to a weighted mean loss)."""
        w = F.softplus(self.weight_logits)
        return w / w.mean().clamp(min=1e-12)

    @property
    def field_probs(self) -> dict[str, torch.Tensor]:
        """Each relaxed field's ``[m, V]`` distribution over its ids."""
        return {k: torch.softmax(z, dim=1) for k, z in self.field_logits.items()}

    def concat(self, other: Memory) -> Memory:
        return Memory(torch.cat([self.positions, other.positions]), torch.cat([self.label_logits, other.label_logits]),
                      torch.cat([self.weight_logits, other.weight_logits]),
                      {k: torch.cat([z, other.field_logits[k]]) for k, z in self.field_logits.items()})

    def replace(self, slots: torch.Tensor, new: Memory) -> Memory:
        """A copy with ``slots`` overwritten by ``new``'s slots (same count)."""
        out = Memory(self.positions.clone(), self.label_logits.clone(), self.weight_logits.clone(),
                     {k: z.clone() for k, z in self.field_logits.items()})
        out.positions[slots], out.label_logits[slots], out.weight_logits[slots] = new.positions, new.label_logits, new.weight_logits
        for k, z in out.field_logits.items():
            z[slots] = new.field_logits[k]
        return out

    def save(self, path: Path) -> None:
        """Safetensors, written to a temporary name then renamed (a stage file is complete or absent)."""
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        save_file({"positions": self.positions.contiguous(), "label_logits": self.label_logits.contiguous(),
                   "weight_logits": self.weight_logits.contiguous(),
                   **{f"{_FIELD}{k}": z.contiguous() for k, z in self.field_logits.items()}}, str(tmp))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Memory:
        t = load_file(str(path))
        return cls(t["positions"], t["label_logits"], t["weight_logits"],
                   {k.removeprefix(_FIELD): z for k, z in t.items() if k.startswith(_FIELD)})


_FIELD = "field_logits."  # a relaxed field's tensor in a stage file


def peaked_logits(ids: torch.Tensor, size: int, peak: float) -> torch.Tensor:
    """``[m, size]`` logits whose softmax puts ``peak`` on each row's id and ``(1 - peak) / (size - 1)`` on
    every other id (a one-hot, smoothed so that gradients reach the other ids). E.g. ids ``[2]``, size 3,
    peak 0.8: probabilities ``[0.1, 0.1, 0.8]``."""
    if not 0.0 < peak < 1.0:
        raise ValueError(f"peak must be in (0, 1), got {peak}")
    z = torch.zeros(len(ids), size)
    if size > 1:
        z[torch.arange(len(ids)), ids.long()] = float(np.log(peak * (size - 1) / (1 - peak)))
    return z


def _link_tree(source: Path, target: Path, skip: set[str]) -> None:
    for path in source.rglob("*"):
        rel = path.relative_to(source)
        if rel.parts[0] in skip or path.is_dir():
            continue
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, dest)
        except OSError:  # another file system: copy
            shutil.copy2(path, dest)


def write_memory_dataset(stream: ChainStream, memory: Memory, out: Path, meta: dict[str, Any],
                         stages: Path | None = None) -> Path:
    """Write ``memory`` over ``stream``'s dataset as a prepared dataset at ``out`` (atomically); ``stages``
    (a folder of per-stage files) is copied in as ``out/stages``."""
    source = stream.dataset.path
    out = Path(out)
    if out.resolve() == source.resolve():
        raise ValueError(f"--out {out} is the source dataset itself")
    chains = stream.tables.chains
    rows = stream.rows[memory.positions.numpy()]
    soft, weights = memory.soft_labels.detach().numpy(), memory.weights.detach().numpy()
    frame = pl.DataFrame({
        "chain": rows.astype(np.int64), "user": chains.user[rows], "item": chains.item[rows], "start": chains.start[rows],
        **{f"soft_{a}": soft[:, i].astype(np.float32) for i, a in enumerate(stream.actions)},
        "weight": weights.astype(np.float32),
    })
    for k, p in memory.field_probs.items():  # a fixed-size list per slot (polars Array)
        frame = frame.with_columns(pl.Series(f"{RELAXED_PREFIX}{k}", p.detach().numpy().astype(np.float32)))
    with staged_folder(out) as tmp:
        _link_tree(source, tmp, skip={MANIFEST, MEMORY_FILE, "stages"})
        frame.write_parquet(tmp / MEMORY_FILE)
        if stages is not None:
            shutil.copytree(stages, tmp / "stages")
        manifest = Manifest.read(source)
        manifest.extra = {**manifest.extra, "memory": {**meta, "slots": len(memory), "stream_chains": stream.size,
                                                       "source": str(source), "fingerprint": stream.fingerprint()}}
        manifest.write(tmp)
    return out


def check_memory_of(memory_dir: Path, stream: ChainStream) -> dict[str, Any]:
    """The memory's metadata, after checking that it was built on ``stream``'s dataset."""
    meta = Manifest.read(Path(memory_dir)).extra.get("memory")
    if meta is None:
        raise DataError(memory_dir, "not a distilled memory (its manifest has no 'memory' entry)")
    if meta["fingerprint"] != stream.fingerprint():
        raise DataError(memory_dir, f"built on another dataset ({meta['source']}: vocabularies "
                                    f"{meta['fingerprint']['vocab_sizes']}), not on {stream.dataset.path} "
                                    f"(vocabularies {stream.fingerprint()['vocab_sizes']})")
    return meta


def memory_coverage(memory_dir: Path, stage: str = "test") -> dict[str, float]:
    """How much of a split the memory's slots have seen: the share of ``stage``'s chains whose user, and whose
    item, occurs in at least one slot, and whose item occurs in at least five (``items_5``); beside the same
    shares for the whole training split (``*_full``), the most any memory of it can cover.

    A diagnostic for what a memory can teach embedding-based models (BENCHMARKS.md, "DIET"): an item no slot
    holds keeps its initial embedding, which is all a model trained on the memory has for the test chains of it.
    E.g. 1% of a 600-user, 3,000-item stream: ``{"users": 0.93, "items": 0.72, "items_5": 0.45, ...}``."""
    dataset = PreparedDataset(str(memory_dir))
    if dataset.manifest.extra.get("memory") is None:
        raise DataError(memory_dir, "not a distilled memory (its manifest has no 'memory' entry)")
    tables = ChainTables(dataset, None)
    chains, slots = tables.chains, tables.memory.rows
    target = np.flatnonzero(chains.split == SPLIT_NAMES.index(stage))
    train = np.flatnonzero(chains.split == 0)
    user, item = np.asarray(chains.user), np.asarray(chains.item)
    slot_items = np.bincount(item[slots], minlength=int(item.max()) + 1)
    return {"users": float(np.isin(user[target], user[slots]).mean()),
            "items": float((slot_items[item[target]] > 0).mean()),
            "items_5": float((slot_items[item[target]] >= 5).mean()),
            "users_full": float(np.isin(user[target], user[train]).mean()),
            "items_full": float(np.isin(item[target], item[train]).mean())}
