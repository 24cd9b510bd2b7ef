"""Next-item retrieval data: user histories -> the next item, as a LightningDataModule.

Only *positive* events form histories and targets (e.g. clicks on KuaiRand, where every impression is a
log row; every Tmall event is an interaction). Two split modes:

* ``date`` (default): training samples are windows over each user's training-period positives, the
  ``max_len + 1`` items of a window giving ``max_len`` (input, next item) pairs; windows tile the whole
  training sequence from its end. Validation / test samples are the first ``eval_per_user`` positives of a
  user in that period, each predicted from all of the user's earlier positives (last ``max_len``).
* ``leave_last_out``: each user's last positive is test, the one before validation, the rest training
  (users with fewer than 3 positives only train).

Batches are :class:`~recsys.data.batches.RetrievalBatch` es built for a whole index batch at once
(``__getitems__``), so loading is vectorised and deterministic: negatives depend only on the seed and
the batch's sample indices. Index batches come from a standard sampler, so Lightning shards them by rank
(DistributedSampler) when training on several processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from recsys.data.batches import RetrievalBatch, jagged_take, make_kjt
from recsys.data.loading import BatchedDataModule, Stage
from recsys.data.prepared import PreparedDataset, Sequences
from recsys.data.sampling import NegativeSampler
from recsys.data.splits import TEST, TRAIN, VALID, leave_last_out



def positive_sequences(dataset: PreparedDataset, positive: str | list[str] | None,
                       values: tuple[str, ...] = ()) -> Sequences:
    """Each user's positive events only: events with any of the ``positive`` actions (``None``: any
    action at all; ``"all"``: every event, impressions without feedback included); with the event
    table's columns ``values`` per event (:attr:`Sequences.values`)."""
    seq = dataset.sequences()
    for name in values:
        seq.values[name] = dataset.sequence_values(name, seq)
    mask = dataset.action_mask(positive)
    return seq if mask == 0 else seq.filter_events((seq.actions & mask) != 0)


class RetrievalSamples(Dataset):
    """Samples of one stage over positive sequences; ``__getitems__`` returns a whole batch."""

    def __init__(
        self,
        seq: Sequences,
        stage: Stage,
        *,
        split: Literal["date", "leave_last_out"] = "date",
        max_len: int = 50,
        eval_per_user: int | None = 1,
        negatives: int = 0,
        sampler: NegativeSampler | None = None,
        seed: int = 0,
    ) -> None:
        self.seq, self.stage, self.max_len = seq, stage, max_len
        self.negatives, self.sampler, self.seed = negatives, sampler, seed
        if negatives and sampler is None:
            raise ValueError("negatives > 0 needs a sampler")
        codes = seq.split if split == "date" else leave_last_out(seq.offsets)
        user_of = np.repeat(np.arange(len(seq)), seq.lengths)
        if stage == "train":
            self._init_windows(codes == TRAIN, user_of)
        else:
            self._init_eval(codes == (VALID if stage == "valid" else TEST), user_of, eval_per_user)

    # Training: (start, end) windows over the training positives, which are a prefix of each user's
    # sequence in both split modes (date order, or all but the last two).
    def _init_windows(self, is_train: np.ndarray, user_of: np.ndarray) -> None:
        n_train = np.bincount(user_of[is_train], minlength=len(self.seq))
        start = self.seq.offsets[:-1]
        pairs = np.maximum(n_train - 1, 0)
        n_windows = -(-pairs // self.max_len)  # ceil
        owner = np.repeat(np.arange(len(self.seq)), n_windows)
        k = np.arange(n_windows.sum()) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
        self.end = start[owner] + n_train[owner] - k * self.max_len  # exclusive end of the targets
        self.begin = np.maximum(start[owner], self.end - 1 - self.max_len)  # first input position
        self.owner = owner

    def _init_eval(self, is_stage: np.ndarray, user_of: np.ndarray, per_user: int | None) -> None:
        pos = np.flatnonzero(is_stage)
        if per_user is not None:
            rank = np.arange(pos.size) - _group_first(user_of[pos])  # 0 for a user's first target
            pos = pos[rank < per_user]
        self.owner = user_of[pos]
        self.end = pos  # the target position; history is everything before it
        self.begin = np.maximum(self.seq.offsets[:-1][self.owner], pos - self.max_len)

    def __len__(self) -> int:
        return int(self.end.shape[0])

    def __getitem__(self, index: int) -> RetrievalBatch:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> RetrievalBatch:
        idx = np.asarray(indices, dtype=np.int64)
        begin, end, owner = self.begin[idx], self.end[idx], self.owner[idx]
        users = torch.from_numpy(self.seq.users[owner].astype(np.int64))
        if self.stage == "train":
            lengths = end - 1 - begin
            inputs = self.seq.item[jagged_take(begin, lengths)]
            targets = self.seq.item[jagged_take(begin + 1, lengths)]
            aligned = True
        else:
            lengths = end - begin
            inputs = self.seq.item[jagged_take(begin, lengths)]
            targets = self.seq.item[end]
            aligned = False
        negatives = None
        if self.negatives:
            negatives = torch.from_numpy(self.sampler.sample((targets.shape[0], self.negatives), idx, self.seed))
        return RetrievalBatch(
            features=make_kjt({"item": (inputs, lengths)}),
            targets=torch.from_numpy(targets.astype(np.int64)),
            users=users,
            negatives=negatives,
            aligned=aligned,
        )


def _group_first(groups: np.ndarray) -> np.ndarray:
    """For sorted group labels, the position of each element's group start (rank = i - this)."""
    if groups.size == 0:
        return groups.astype(np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(groups)) + 1]
    return np.repeat(starts, np.diff(np.r_[starts, groups.size]))



class RetrievalDataModule(BatchedDataModule):
    """Next-item retrieval over a prepared dataset (see the module docstring).

    Args:
        data: folder of a prepared dataset.
        positive: action(s) that make an event part of histories and targets (``None``: any action).
        split: ``"date"`` (the prepared date split) or ``"leave_last_out"``.
        max_len: history length.
        eval_per_user: validation/test targets per user (``None``: every positive of the period).
        train_negatives: sampled negatives per training target (0 for full-softmax models).
        eval_negatives: sampled negatives per evaluation target (``None``: rank the full catalogue).
        sampler: ``"uniform"`` or ``"popularity"`` (training-period counts ** 0.75).
    """

    def __init__(
        self,
        data: str | Path,
        positive: str | list[str] | None = None,
        split: Literal["date", "leave_last_out"] = "date",
        max_len: int = 50,
        batch_size: int = 256,
        eval_batch_size: int = 512,
        eval_per_user: int | None = 1,
        train_negatives: int = 0,
        eval_negatives: int | None = None,
        sampler: Literal["uniform", "popularity"] = "uniform",
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        data = str(data)  # plain types only in checkpoints: they load with torch.load(weights_only=True)
        self.save_hyperparameters()
        self.dataset = PreparedDataset(data)
        self._samples: dict[str, RetrievalSamples] = {}

    @property
    def num_items(self) -> int:
        return self.dataset.num_items

    def setup(self, stage: str | None = None) -> None:
        if self._samples:
            return
        hp = self.hparams
        seq = positive_sequences(self.dataset, hp.positive)
        train_codes = seq.split if hp.split == "date" else leave_last_out(seq.offsets)
        counts = np.bincount(seq.item[train_codes == TRAIN], minlength=self.num_items)
        sampler = NegativeSampler(self.num_items, hp.sampler, counts=counts if hp.sampler == "popularity" else None)
        self.train_item_counts = counts
        common = dict(split=hp.split, max_len=hp.max_len, sampler=sampler, seed=hp.seed)
        self._samples["train"] = RetrievalSamples(seq, "train", negatives=hp.train_negatives, **common)
        for name in ("valid", "test"):
            self._samples[name] = RetrievalSamples(
                seq, name, eval_per_user=hp.eval_per_user, negatives=hp.eval_negatives or 0, **common
            )

    def samples(self, stage: Stage) -> RetrievalSamples:
        self.setup()
        return self._samples[stage]
