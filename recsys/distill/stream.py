"""The training stream of a prepared dataset as blocks of action chains, and the proxy model's inputs.

DIET and its baselines (:mod:`recsys.distill.diet`, :mod:`recsys.distill.baselines`) see the training
split as it arrives: block ``b`` holds the chains that started on days ``[b * block_days, (b + 1) *
block_days)`` of the training period (one day per block by default). A memory slot is one chain, named
by its row in :class:`~recsys.data.chains.Chains` (the order every :class:`ChainDataModule` of the same
dataset shares), so a memory written as a prepared dataset reads back through the ordinary loaders.

The proxy model (:mod:`recsys.distill.proxy`) reads dense tensors, computed once per chain with the
toolkit's own batch builder (:class:`~recsys.data.chain_ranking.ChainSamples`) so that it sees the same
features as the models it stands in for::

    ids     [N, F]  int64   one id per single-valued key (user, item, its side fields, context), offset
                            into one shared table (``table_offsets``)
    history [N, L]  int64   the last L history items (offset into the same table), 0-padded (id 0 is padding)
    slots   [N, 2S + 1]     mean history action slots (flags, times) and log1p(history length)
    labels  [N, K]          whether each action occurred

A memory with relaxed fields (DIET's soft one-hot option) replaces some ``ids`` columns by distributions:
``relaxed`` maps a column to a :class:`RelaxedField`, whose ``probs [N, V]`` weigh the column's ``V``
table rows (starting at ``offset``) instead of looking one up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from recsys.data.chain_ranking import ChainSamples, ChainTables
from recsys.data.errors import DataError
from recsys.data.prepared import PreparedDataset
from recsys.models.mmoe import JAGGED_KEYS, segment_mean, slot_features

MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class Relaxable:
    """A single-valued key whose id DIET may relax into a distribution: its column in ``ids``, its rows'
    start in the proxy's shared table and its vocabulary size."""

    key: str
    column: int
    offset: int
    size: int


@dataclass
class RelaxedField:
    """A relaxed column: ``probs [N, V]`` over the ``V`` ids of the key at ``offset`` in the shared table."""

    offset: int
    probs: torch.Tensor


@dataclass
class ProxyInputs:
    ids: torch.Tensor
    history: torch.Tensor
    slots: torch.Tensor
    labels: torch.Tensor
    relaxed: dict[int, RelaxedField] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def take(self, index: torch.Tensor | np.ndarray) -> ProxyInputs:
        index = torch.as_tensor(index, dtype=torch.long)
        relaxed = {c: RelaxedField(r.offset, r.probs[index]) for c, r in self.relaxed.items()}
        return ProxyInputs(self.ids[index], self.history[index], self.slots[index], self.labels[index], relaxed)

    def with_relaxed(self, relaxed: dict[int, RelaxedField]) -> ProxyInputs:
        """The same samples with ``relaxed`` columns (their ``probs`` one row per sample)."""
        return ProxyInputs(self.ids, self.history, self.slots, self.labels, relaxed)


class ChainStream:
    """The training chains of a prepared dataset in arrival order, cut into blocks of ``block_days`` days.

    Args:
        data: a prepared dataset folder.
        main_label: the action used to stratify selections (default: the dataset's last chain action:
            Tmall ``purchase``, KuaiRand ``like``).
        block_days: days per block.
        history_len: history items the proxy reads.

    Raises :class:`DataError` when the training period has missing days or a block holds no chain.
    """

    def __init__(self, data: str, *, main_label: str | None = None, block_days: int = 1,
                 history_len: int = 20) -> None:
        if block_days < 1:
            raise ValueError(f"block_days must be >= 1, got {block_days}")
        self.dataset = PreparedDataset(data)
        self.tables = ChainTables(self.dataset, None)
        chains = self.tables.chains
        self.actions = list(chains.spec.actions)
        main_label = main_label or DEFAULT_MAIN.get(self.dataset.manifest.dataset.split("-")[0], self.actions[0])
        if main_label not in self.actions:
            raise ValueError(f"main label {main_label!r} is not a chain action of this dataset: {self.actions}")
        self.main_label = main_label
        self.main = self.actions.index(main_label)
        self.rows = np.flatnonzero(chains.split == 0)  # chains are ordered by user: re-order by time
        if self.rows.size == 0:
            raise DataError(self.dataset.path, "the training split holds no chain")
        day = chains.start[self.rows] // MS_PER_DAY
        order = np.lexsort((self.rows, day))
        self.rows, day = self.rows[order], day[order]
        days = np.unique(day)
        missing = np.setdiff1d(np.arange(days[0], days[-1] + 1), days)
        if missing.size:
            names = [str(np.datetime64(int(d), "D")) for d in missing[:5]]
            raise DataError(self.dataset.path, f"the training stream has {missing.size} missing day(s) with no "
                                               f"chain, first {names}: a block would be empty")
        block = (day - days[0]) // block_days
        self.bounds = np.searchsorted(block, np.arange(int(block[-1]) + 2))  # block b: rows[bounds[b]:bounds[b+1]]
        self.block_first_day = [str(np.datetime64(int(days[0] + b * block_days), "D")) for b in range(len(self))]
        self.history_len = history_len
        self._inputs: ProxyInputs | None = None

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def block(self, b: int) -> np.ndarray:
        """Positions (into :attr:`rows` and :meth:`inputs`) of block ``b``'s chains."""
        return np.arange(self.bounds[b], self.bounds[b + 1])

    @property
    def size(self) -> int:
        return int(self.rows.shape[0])

    def budget_slots(self, budget: float) -> int:
        if not 0.0 < budget < 1.0:
            raise ValueError(f"budget must be a fraction in (0, 1) of the stream, got {budget}")
        return max(1, int(round(budget * self.size)))

    def fingerprint(self) -> dict:
        m = self.dataset.manifest
        return {"dataset": m.dataset, "vocab_sizes": m.vocab_sizes, "rows": m.rows, "chains": len(self.tables.chains)}

    @property
    def table_sizes(self) -> dict[str, int]:
        """Vocabulary size of every single-valued key the proxy reads."""
        card = self.tables.cardinalities
        return {k: card[k] for k in card if k not in JAGGED_KEYS and not k.startswith("history_")}

    def relaxable(self, max_vocab: int) -> list[Relaxable]:
        """The single-valued keys with at most ``max_vocab`` ids (0: none), ``user`` and ``item`` never:
        the fields DIET's soft one-hot option relaxes. E.g. KuaiRand with 32: ``video_type`` (3 ids),
        ``user_active_degree`` (8), ``tab`` (15), ``hour`` (24), ...; not ``author`` (2,503 on the 600-user
        synthetic stream)."""
        sizes = self.table_sizes
        offsets = np.cumsum([0, *sizes.values()])[:-1]
        return [Relaxable(k, c, int(o), n) for c, ((k, n), o) in enumerate(zip(sizes.items(), offsets))
                if k not in ("user", "item") and n <= max_vocab]

    @cached_property
    def users(self) -> np.ndarray:
        """The user of every training chain, in stream order."""
        return np.asarray(self.tables.chains.user)[self.rows].astype(np.int64)

    def inputs(self) -> ProxyInputs:
        """The proxy's tensors for every training chain, in stream order (computed once)."""
        if self._inputs is None:
            self._inputs = self._build_inputs()
        return self._inputs

    def _build_inputs(self, chunk: int = 8192) -> ProxyInputs:
        samples = ChainSamples(self.tables, "train", max_len=self.history_len)
        samples.rows = self.rows  # stream order
        sizes = self.table_sizes
        offsets = np.cumsum([0, *sizes.values()])[:-1]
        item_offset = int(offsets[list(sizes).index("item")])
        spec = self.tables.spec
        ids, hist, slots, labels = [], [], [], []
        for start in range(0, self.size, chunk):
            batch = samples.__getitems__(list(range(start, min(start + chunk, self.size))))
            f = batch.features
            ids.append(torch.stack([f[k].values() + int(o) for k, o in zip(sizes, offsets)], dim=1))
            h = f["history"]
            lengths = h.lengths().long()
            padded = torch.zeros(len(lengths), self.history_len, dtype=torch.long)
            mask = torch.arange(self.history_len)[None, :] < lengths[:, None]
            padded[mask] = h.values() + item_offset  # item 0 (padding) never appears in a history
            hist.append(padded)
            s = slot_features(spec, batch.history_flags, batch.history_times)
            slots.append(torch.cat([segment_mean(s, lengths), torch.log1p(lengths.float())[:, None]], dim=1))
            labels.append(batch.occurred[:, : len(self.actions)])
        return ProxyInputs(torch.cat(ids), torch.cat(hist), torch.cat(slots), torch.cat(labels))


DEFAULT_MAIN = {"tmall": "purchase", "kuairand": "like", "movielens": "like"}
