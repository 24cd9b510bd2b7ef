"""Lifelong-history samples for GEMs: a user's whole past split by recency into three streams.

GEMs (Zhou et al., arXiv 2602.13631, Sec. 3; ``../shared/PAPERS.md`` §2) reads a lifelong sequence
``x_1..x_T`` as three streams with their own costs: **recent** = the last ``recent`` events before the
target, **mid-term** = the ``mid`` events before those, **lifecycle** = every older event. The paper uses
256 / 5,000 / the rest (up to 100k); the defaults here are scaled to the public data (64 / 1,024 / rest).

Only positive events (e.g. clicks) form the sequence, as in next-item retrieval; a sample is a positive
event of the split (its item is the target) with the user's earlier positives as streams. Per event the
batch carries its item, the item's author (where the data has one), its action bits, its age (hours
before the target, for time embeddings) and how long the user played the item (seconds, where the event
table has ``play_time_ms``, as KuaiRand's does; 0 elsewhere)::

    features["recent"]        items of the recent stream, jagged (oldest first), with
    features["recent_author"] their authors (aligned), and ages / actions / plays as dense values aligned too
    features["mid"], ["life"] the same for the mid-term and lifecycle streams

For one user whose clicks (oldest first) are items 4, 9, 4, 7 at hours 0, 20, 30, 47 with plays of
12 s, 3 s, 40 s, 8 s, the target 7 and ``recent=2``, ``mid=1``: ``features["recent"]`` holds [9, 4] with
``ages["recent"] = [27., 17.]`` and ``plays["recent"] = [3., 40.]``, ``features["mid"]`` holds [4]
(age 47, play 12 s), ``features["life"]`` nothing.

The item's other per-event features of the paper's list (tags, video duration; PAPERS.md §2.2) are item
attributes: :func:`item_attributes` tabulates them once per dataset (``item_attributes_path``) and the
model looks them up from the item ids, so batches and serving inputs stay item + author.

Training samples are every positive event of the training period (``max_train_per_user`` caps them per
user, keeping the latest); validation / test samples are the first ``eval_per_user`` positives of each
user in that period. Streams never include the target or anything after it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from typing import Literal

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.data.batches import _Movable, jagged_take, make_kjt
from recsys.data.loading import BatchedDataModule, Stage
from recsys.data.prepared import PreparedDataset
from recsys.data.retrieval import positive_sequences
from recsys.data.splits import TEST, TRAIN, VALID

STREAMS = ("recent", "mid", "life")
MS_PER_HOUR = 3_600_000
#: The event table's column of play time per event (KuaiRand's ``play_time_ms``), read when present.
PLAY_COLUMN = "play_time_ms"
#: An item's first tags kept as attributes (KuaiRand videos have 1-3).
MAX_TAGS = 3
#: Upper edges (seconds) of the video-duration buckets: doubling widths from 2 s to 17 min.
DURATION_EDGES_S = tuple(2**k for k in range(1, 11))


def item_attributes(dataset: PreparedDataset) -> dict[str, tuple[np.ndarray, int]]:
    """The items' attributes GEMs embeds with every event: ``{name: (ids [num_items, slots], cardinality)}``,
    row = the item's vocabulary index, 0 = none (padding item, missing value, unused tag slot).

    * ``tags``: the item's first :data:`MAX_TAGS` tags (vocabulary indices), where the data has tags;
    * ``duration``: 1 + the log2 bucket of ``video_duration`` (ms) in seconds (:data:`DURATION_EDGES_S`).

    >>> import polars as pl
    >>> items = pl.DataFrame({"tags": [[], [3], [5, 2, 7, 1]], "video_duration": [None, 1500.0, 40000.0]})
    >>> ids, _ = _item_attribute_table(items, {"tags": 8})["tags"]
    >>> ids.tolist()
    [[0, 0, 0], [3, 0, 0], [5, 2, 7]]
    >>> _item_attribute_table(items, {})["duration"][0].ravel().tolist()   # 1.5 s -> bucket 1, 40 s -> 6
    [0, 1, 6]
    """
    return _item_attribute_table(dataset.items(), dataset.manifest.vocab_sizes)


def read_item_attributes(path: str | Path) -> dict[str, tuple[torch.Tensor, int]]:
    """``{name: (ids [num_items, slots], cardinality)}`` from the file that
    :attr:`LifelongDataModule.item_attributes_path` wrote (safetensors: no pickle)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no item attributes file (written by LifelongDataModule.item_attributes_path)")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        out = {}
        for name in f.keys():
            if name not in meta:
                raise ValueError(f"{path}: attribute {name!r} has no cardinality in the file's metadata")
            out[name] = (f.get_tensor(name).long(), int(meta[name]))
    return out


def _item_attribute_table(items, vocab_sizes: dict[str, int]) -> dict[str, tuple[np.ndarray, int]]:
    out: dict[str, tuple[np.ndarray, int]] = {}
    if "tags" in items.columns and "tags" in vocab_sizes:
        lists = items["tags"].list.head(MAX_TAGS)
        lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
        values = lists.explode().drop_nulls().to_numpy().astype(np.int64)
        ids = np.zeros((len(items), MAX_TAGS), dtype=np.int64)
        rows = np.repeat(np.arange(len(items)), lengths)
        slots = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        ids[rows, slots] = values
        out["tags"] = (ids, int(vocab_sizes["tags"]))
    if "video_duration" in items.columns:
        seconds = items["video_duration"].cast(pl.Float64).to_numpy() / 1000.0
        known = np.isfinite(seconds) & (seconds > 0)
        bucket = np.where(known, 1 + np.searchsorted(np.asarray(DURATION_EDGES_S, float), np.where(known, seconds, 0),
                                                     side="right"), 0)
        out["duration"] = (bucket.astype(np.int64)[:, None], len(DURATION_EDGES_S) + 2)
    return out


@dataclass
class LifelongBatch(_Movable):
    """Three jagged streams per sample (see the module docstring) and the target item.

    ``ages`` / ``actions`` / ``plays``: ``{stream: [sum(lengths)]}`` aligned with ``features[stream]``: hours
    before the target (float), the event's action bitmask (int64) and its play time in seconds (float; 0:
    unknown, or a dataset without play times).
    """

    features: KeyedJaggedTensor
    ages: dict[str, torch.Tensor]
    actions: dict[str, torch.Tensor]
    targets: torch.Tensor
    users: torch.Tensor
    plays: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> LifelongBatch:
        moved = super().to(device, non_blocking)
        moved.ages = {k: v.to(device) for k, v in self.ages.items()}
        moved.actions = {k: v.to(device) for k, v in self.actions.items()}
        moved.plays = {k: v.to(device) for k, v in self.plays.items()}
        return moved

    @property
    def batch_size(self) -> int:
        return int(self.users.shape[0])


class LifelongSamples(Dataset):
    def __init__(self, dataset: PreparedDataset, seq, author: np.ndarray | None, stage: Stage, *, recent: int,
                 mid: int, life: int | None, eval_per_user: int | None, max_train_per_user: int | None,
                 train_targets: str = "latest") -> None:
        self.seq, self.author = seq, author
        self.recent, self.mid, self.life = recent, mid, life
        play_ms = seq.values.get(PLAY_COLUMN)  # seconds, once; a missing play time (null) is unknown, 0
        self.play_s = None if play_ms is None else np.nan_to_num(play_ms.astype(np.float32) / 1000.0, nan=0.0)
        code = {"train": TRAIN, "valid": VALID, "test": TEST}[stage]
        user_of = np.repeat(np.arange(len(seq)), seq.lengths)
        pos = np.flatnonzero(seq.split == code)
        starts = seq.offsets[:-1][user_of[pos]]
        pos = pos[pos > starts]  # a target needs at least one earlier event
        cap = eval_per_user if stage != "train" else max_train_per_user
        if cap is not None and pos.size:
            owner = user_of[pos]
            first = np.r_[0, np.flatnonzero(np.diff(owner)) + 1]
            rank = np.arange(pos.size) - np.repeat(first, np.diff(np.r_[first, pos.size]))
            count = np.repeat(np.diff(np.r_[first, pos.size]), np.diff(np.r_[first, pos.size]))
            if stage == "train" and train_targets == "spread":  # cap targets evenly spaced, ending at the latest
                back = count - 1 - rank
                keep = (back == 0) | ((back * cap) // count != ((back - 1) * cap) // count)
                pos = pos[keep | (count <= cap)]
            else:
                if stage == "train":  # keep the latest training targets of a user
                    rank = count - 1 - rank
                pos = pos[rank < cap]
        self.targets = pos
        self.owner = user_of[pos]

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index: int) -> LifelongBatch:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> LifelongBatch:
        s = self.seq
        idx = np.asarray(indices, dtype=np.int64)
        target = self.targets[idx]
        start = s.offsets[:-1][self.owner[idx]]
        r_begin = np.maximum(start, target - self.recent)
        m_begin = np.maximum(start, r_begin - self.mid)
        l_begin = start if self.life is None else np.maximum(start, m_begin - self.life)
        bounds = {"recent": (r_begin, target), "mid": (m_begin, r_begin), "life": (l_begin, m_begin)}
        feats, ages, actions, plays = {}, {}, {}, {}
        target_ts = s.ts[target]
        for name, (lo, hi) in bounds.items():
            rows = jagged_take(lo, hi - lo)
            feats[name] = (s.item[rows], hi - lo)
            if self.author is not None:
                feats[f"{name}_author"] = (self.author[s.item[rows]], hi - lo)
            age = (np.repeat(target_ts, hi - lo) - s.ts[rows]) / MS_PER_HOUR
            ages[name] = torch.from_numpy(age.astype(np.float32))
            actions[name] = torch.from_numpy(s.actions[rows].astype(np.int64))
            plays[name] = torch.zeros(rows.shape[0]) if self.play_s is None else torch.from_numpy(self.play_s[rows])
        return LifelongBatch(
            features=make_kjt(feats),
            ages=ages,
            actions=actions,
            targets=torch.from_numpy(s.item[target].astype(np.int64)),
            users=torch.from_numpy(s.users[self.owner[idx]].astype(np.int64)),
            plays=plays,
        )


class LifelongDataModule(BatchedDataModule):
    """Lifelong three-stream samples over a prepared dataset (see the module docstring).

    Args:
        data: folder of a prepared dataset.
        positive: actions that make an event part of the sequence (``None``: any action).
        recent / mid: stream lengths; life: cap on the lifecycle stream (``None``: everything older).
        eval_per_user: validation/test targets per user; max_train_per_user: training targets per user
            (``None``: all): the latest ones (``train_targets="latest"``) or evenly spaced over the user's
            training period (``"spread"``: targets at every distance from an interest's last occurrence,
            e.g. where a long-dormant interest returns).
        sid_levels / sid_codebook / sid_collision: the semantic IDs (:attr:`semantic_ids_path`): residual
            k-means over SVD item vectors of the training interactions.
        sid_vectors: build the semantic IDs from these item vectors instead (a safetensors file with an
            ``item`` tensor ``[num_items, d]``, e.g. MARC codes of the items' texts: ``recsys marc train``).
    """

    def __init__(
        self,
        data: str | Path,
        positive: str | list[str] | None = "click",
        recent: int = 64,
        mid: int = 1024,
        life: int | None = None,
        eval_per_user: int | None = 1,
        max_train_per_user: int | None = None,
        train_targets: Literal["latest", "spread"] = "latest",
        sid_levels: int = 3,
        sid_codebook: int = 64,
        sid_collision: str = "extra_level",
        sid_vectors: str | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        data = str(data)  # plain types only in checkpoints
        self.save_hyperparameters()
        self.dataset = PreparedDataset(data)
        self._seq = None
        self._author: np.ndarray | None = None

    @property
    def num_items(self) -> int:
        return self.dataset.num_items

    @property
    def event_play_time(self) -> bool:
        """Whether the events carry play times (:data:`PLAY_COLUMN`), what GEMs models link to
        (``play_time``)."""
        return PLAY_COLUMN in self.dataset.scan_events().collect_schema()

    @property
    def feature_cardinalities(self) -> dict[str, int]:
        cards = {name: self.num_items for name in STREAMS}
        if "author" in self.dataset.manifest.vocab_sizes:
            cards.update({f"{name}_author": self.dataset.manifest.vocab_sizes["author"] for name in STREAMS})
        return cards

    def setup(self, stage: str | None = None) -> None:
        if self._seq is None:
            self._seq = positive_sequences(self.dataset, self.hparams.positive,
                                           (PLAY_COLUMN,) if self.event_play_time else ())
            items = self.dataset.items()
            if "author" in items.columns:
                self._author = items["author"].to_numpy().astype(np.int64)

    @property
    def item_attributes_path(self) -> str | None:
        """A safetensors file of the items' attributes (:func:`item_attributes`; one tensor per attribute,
        its cardinality in the metadata), built once under ``<prepared>/derived/``; ``None`` when the
        dataset's items have none (what GEMs models link to)."""
        path = self.dataset.path / "derived" / "item-attributes-v1.safetensors"
        if path.exists():
            return str(path)
        attrs = item_attributes(self.dataset)
        if not attrs:
            return None
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        save_file({k: torch.from_numpy(ids) for k, (ids, _) in attrs.items()}, str(tmp),
                  metadata={k: str(card) for k, (_, card) in attrs.items()})
        os.replace(tmp, path)  # complete or absent (ranks of one job write the same bytes)
        return str(path)

    @property
    def semantic_ids_path(self) -> str:
        """Folder of the dataset's semantic IDs, built once from the training interactions and cached
        under ``<prepared>/derived/`` (what GEMs models link to)."""
        from recsys.data.item_vectors import training_item_vectors
        from recsys.models.semantic_ids import SemanticIds

        hp = self.hparams
        name = f"sid2-L{hp.sid_levels}-C{hp.sid_codebook}-{hp.sid_collision}-s{hp.seed}"
        if hp.sid_vectors:  # e.g. MARC codes of the items' texts (recsys.distill.marc)
            name += "-v" + hashlib.sha256(Path(hp.sid_vectors).read_bytes()).hexdigest()[:12]
        folder = self.dataset.path / "derived" / name
        if not (folder / "semantic_ids.json").exists():
            if hp.sid_vectors:
                from recsys.models.pretrained import load_vectors

                vectors = load_vectors(hp.sid_vectors, {"item": self.num_items})["item"].float()
            else:
                vectors = training_item_vectors(self.dataset, hp.positive, dim=64, seed=hp.seed)
            sids = SemanticIds.build(vectors, levels=hp.sid_levels, codebook_size=hp.sid_codebook,
                                     collision=hp.sid_collision, seed=hp.seed)
            tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
            sids.save(tmp)
            try:
                os.replace(tmp, folder)  # complete or absent
            except OSError:
                # Another process (a rank of the same job) built the same deterministic IDs first.
                shutil.rmtree(tmp, ignore_errors=True)
                if not (folder / "semantic_ids.json").exists():
                    raise
        return str(folder)

    def samples(self, stage: Stage) -> LifelongSamples:
        self.setup()
        hp = self.hparams
        return LifelongSamples(self.dataset, self._seq, self._author, stage, recent=hp.recent, mid=hp.mid,
                               life=hp.life, eval_per_user=hp.eval_per_user, max_train_per_user=hp.max_train_per_user,
                               train_targets=hp.train_targets)
