"""Data loaders over datasets whose ``__getitems__`` builds a whole batch (vectorised, no per-sample
collate). Shared by the retrieval, ranking and chain data modules.

Index batches come from :class:`~recsys.data.sharding.ShardedBatches`: each rank of a data-parallel job
gets its own slice of every global batch (no sample repeated or dropped, equal batch counts), shuffled by
(seed, epoch); Lightning keeps that sampler (it is a ``DistributedSampler``) and sets its epoch.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
from torch.utils.data import DataLoader, Dataset

from recsys.data.sharding import BatchIndexed, ShardedBatches, world

Stage = Literal["train", "valid", "test"]


def batch_identity(batch: Any) -> Any:
    """The collate function: ``__getitems__`` already returned the batch (module-level: picklable)."""
    return batch


class BatchedDataModule(L.LightningDataModule):
    """Loaders for ``samples(stage)``; subclasses save ``batch_size``, ``eval_batch_size``,
    ``num_workers`` and ``seed`` as hyper-parameters and implement :meth:`samples`."""

    def samples(self, stage: Stage) -> Dataset:
        raise NotImplementedError

    def _world(self) -> tuple[int, int]:
        """``(world_size, rank)``: the attached trainer's, else the process group's, else ``(1, 0)``."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.world_size, trainer.global_rank
        return world()

    def _loader(self, stage: Stage, shuffle: bool) -> DataLoader:
        hp = self.hparams
        samples = self.samples(stage)
        size, rank = self._world()
        sampler = ShardedBatches(len(samples), hp.batch_size if stage == "train" else hp.eval_batch_size,
                                 num_replicas=size, rank=rank, shuffle=shuffle, seed=hp.seed)
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            # A run resumed from a checkpoint builds its loader after the loops are restored, and Lightning
            # creates the iterator before it calls set_epoch: start from the restored epoch's order.
            sampler.set_epoch(trainer.current_epoch)
        return DataLoader(
            BatchIndexed(samples),
            sampler=sampler,
            batch_size=None,  # the sampler yields whole batches
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
