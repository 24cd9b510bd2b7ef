"""Data: readers of the raw public files, synthetic generators, ``prepare``, sequences, splits and the
Lightning data modules.

The flow is one-directional: raw files -> readers (:mod:`.tmall`, :mod:`.kuairand`) -> :func:`prepare`
-> Parquet + manifest -> :class:`PreparedDataset` -> data modules (KJT batches).

Names are imported lazily, so ``recsys data prepare`` never pays for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataError": "recsys.data.errors",
    "PreparedDataset": "recsys.data.prepared",
    "Sequences": "recsys.data.prepared",
    "DayStream": "recsys.data.stream",
    "PrepareOptions": "recsys.data.prepare",
    "prepare": "recsys.data.prepare",
    "make_source": "recsys.data.prepare",
    "TmallSource": "recsys.data.tmall",
    "KuaiRandSource": "recsys.data.kuairand",
    "MovieLensSource": "recsys.data.movielens",
    "RetrievalDataModule": "recsys.data.retrieval",
    "RankingDataModule": "recsys.data.ranking",
    "NegativeSampler": "recsys.data.sampling",
    "synthesize": "recsys.data.synth",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'recsys.data' has no attribute {name!r}")
