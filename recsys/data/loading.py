"""Data loaders over datasets whose ``__getitems__`` builds a whole batch (vectorised, no per-sample
collate). Shared by the retrieval, ranking and chain data modules.

Index batches come from PyTorch's standard samplers, so Lightning swaps in a DistributedSampler when
training on several processes (each rank gets its share of the indices), and shuffling is seeded.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

Stage = Literal["train", "valid", "test"]


def batch_identity(batch: Any) -> Any:
    """The collate function: ``__getitems__`` already returned the batch (module-level: picklable)."""
    return batch


class BatchedDataModule(L.LightningDataModule):
    """Loaders for ``samples(stage)``; subclasses save ``batch_size``, ``eval_batch_size``,
    ``num_workers`` and ``seed`` as hyper-parameters and implement :meth:`samples`."""

    def samples(self, stage: Stage) -> Dataset:
        raise NotImplementedError

    def _loader(self, stage: Stage, shuffle: bool) -> DataLoader:
        hp = self.hparams
        return DataLoader(
            self.samples(stage),
            batch_size=hp.batch_size if stage == "train" else hp.eval_batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(hp.seed) if shuffle else None,
            collate_fn=batch_identity,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
