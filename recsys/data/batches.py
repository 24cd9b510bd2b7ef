"""Training batches: sparse ids as torchrec ``KeyedJaggedTensor``, labels and targets as tensors.

A KJT holds several sparse features for a batch, each a jagged list per sample. For a batch of two users
whose histories are ``[5, 9, 2]`` and ``[7]``::

    features = KeyedJaggedTensor.from_lengths_sync(
        keys=["item"], values=torch.tensor([5, 9, 2, 7]), lengths=torch.tensor([3, 1]))
    features["item"].to_padded_dense(...)   # or fbgemm's jagged_to_padded_dense where a model needs dense

Batches are dataclasses with a ``to(device)`` so Lightning moves them as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


class _Movable:
    def to(self, device: torch.device | str, non_blocking: bool = False):  # noqa: ANN201
        moved = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, (torch.Tensor, KeyedJaggedTensor)):
                value = value.to(device, non_blocking=non_blocking)
            elif isinstance(value, dict):  # e.g. ChainBatch.relaxed
                value = {k: v.to(device, non_blocking=non_blocking) for k, v in value.items()}
            moved[f.name] = value
        return replace(self, **moved)  # type: ignore[type-var]

    def pin_memory(self):  # noqa: ANN201
        pinned = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, (torch.Tensor, KeyedJaggedTensor)):
                value = value.pin_memory()
            elif isinstance(value, dict):
                value = {k: v.pin_memory() for k, v in value.items()}
            pinned[f.name] = value
        return replace(self, **pinned)  # type: ignore[type-var]


@dataclass
class RetrievalBatch(_Movable):
    """Next-item retrieval.

    Training (``targets.dim() == 1`` and aligned with the history): ``features["item"]`` holds each
    sample's input items and ``targets`` the next item at every input position (same jagged layout).
    Evaluation: ``targets`` is ``[B]``, the held-out next item after each history.

    ``negatives``: sampled items, ``[len(targets), n]``, or ``None``.
    """

    features: KeyedJaggedTensor
    targets: torch.Tensor
    users: torch.Tensor
    negatives: torch.Tensor | None = None
    aligned: bool = True  # True: targets per history position (training); False: one per sample

    @property
    def batch_size(self) -> int:
        return int(self.users.shape[0])


@dataclass
class RankingBatch(_Movable):
    """Ranking: user, history and candidate item -> multi-action labels.

    ``features`` keys: ``user``, ``item`` (the candidate) and its side features (one id each),
    ``tags`` (jagged), ``history`` (the user's previous positive items, jagged), and context ids.
    ``labels`` ``[B, A]`` (0/1 per action of the manifest), ``users`` ``[B]`` for GAUC grouping.
    """

    features: KeyedJaggedTensor
    labels: torch.Tensor
    users: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.users.shape[0])


def jagged_take(offsets_start: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat indices of the ranges ``[start, start + length)`` concatenated (vectorised).

    >>> jagged_take(np.array([10, 3]), np.array([2, 3])).tolist()
    [10, 11, 3, 4, 5]
    """
    lengths = lengths.astype(np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts_rep = np.repeat(offsets_start.astype(np.int64), lengths)
    first = np.cumsum(lengths) - lengths
    return starts_rep + np.arange(total, dtype=np.int64) - np.repeat(first, lengths)


def make_kjt(features: dict[str, tuple[np.ndarray, np.ndarray]]) -> KeyedJaggedTensor:
    """A KJT from ``{key: (values, lengths)}`` numpy arrays (values as int64 ids)."""
    keys = list(features)
    values = torch.from_numpy(np.concatenate([features[k][0].astype(np.int64, copy=False) for k in keys]))
    lengths = torch.from_numpy(np.concatenate([features[k][1].astype(np.int32, copy=False) for k in keys]))
    return KeyedJaggedTensor.from_lengths_sync(keys=keys, values=values, lengths=lengths)


@dataclass
class ChainBatch(_Movable):
    """Action-chain ranking (A2Gen): the ranking features plus the history's action slots and chain labels.

    ``features``: as :class:`RankingBatch` (``history`` holds the previous chains' items, jagged).
    ``history_flags`` / ``history_times`` ``[sum(history lengths), S]``: per history item and slot (the
    chain's actions, then its terminal), whether it happened before this sample started, and when (offset
    within that chain; 0 where unknown), aligned with ``features["history"].values()``.
    ``tokens`` / ``token_times`` ``[B, S]``: the label sequence (see :mod:`recsys.data.chains`), NaN times
    where not observed. ``occurred`` / ``times`` ``[B, S]``: per slot, whether it happened and when (NaN:
    unknown or absent).
    ``soft_labels`` ``[B, K]`` / ``weights`` ``[B]``: training on a distilled memory (:mod:`recsys.distill`),
    each sample's learned per-action label in [0, 1] and its weight; ``None`` on ordinary data.
    ``relaxed``: a memory's relaxed fields (DIET's soft one-hot option), ``{key: [B, V]}`` distributions over
    the key's ``V`` ids that the models embed in place of the id ``features[key]`` holds (the slot's real
    one); ``None`` on ordinary data. See :meth:`recsys.models.features.SparseFeatures.forward`.
    """

    features: KeyedJaggedTensor
    history_flags: torch.Tensor
    history_times: torch.Tensor
    tokens: torch.Tensor
    token_times: torch.Tensor
    occurred: torch.Tensor
    times: torch.Tensor
    users: torch.Tensor
    soft_labels: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    relaxed: dict[str, torch.Tensor] | None = None

    def action_targets(self) -> torch.Tensor:
        """``[B, K]`` per-action classification targets: the soft labels where given, else 0/1 occurrence."""
        k = self.occurred.shape[1] - 1
        return self.soft_labels if self.soft_labels is not None else self.occurred[:, :k]

    def weighted_mean(self, per_sample: torch.Tensor) -> torch.Tensor:
        """Mean of ``[B]`` per-sample losses, weighted by ``weights`` where given."""
        if self.weights is None:
            return per_sample.mean()
        return (per_sample * self.weights).sum() / self.weights.sum().clamp(min=1e-12)

    @property
    def batch_size(self) -> int:
        return int(self.users.shape[0])
