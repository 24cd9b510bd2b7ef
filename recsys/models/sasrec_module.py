"""The SASRec-style baseline as a LightningModule: next-item training and full-catalogue evaluation."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F

from recsys.data.batches import RetrievalBatch
from recsys.metrics import RankingMetrics
from recsys.models.distributed import global_mean
from recsys.models.jagged import to_jagged
from recsys.models.sasrec import SASRec, SASRecConfig
from recsys.optim import MuonRec
from recsys.optim.param_groups import dense_parameters


class SASRecModule(L.LightningModule):
    """Train with softmax cross-entropy over the catalogue (``loss="ce"``) or binary cross-entropy with
    the batch's sampled negatives (``loss="bce"``, as in the SASRec paper); evaluate HR/NDCG/Recall@K and
    MRR by ranking the full catalogue, or the sampled candidates when the batch carries negatives.

    ``optimizer="muonrec"`` trains the attention and feed-forward matrices with Muon and the item and
    position tables and <= 1-D parameters with AdamW (MuonRec's ``muonrec`` preset); with ``output="tied"``
    the item table is also the output layer, so it stays on AdamW, while ``output="linear"`` (MuonRec's own
    SASRec) has a separate item-scoring matrix, which the preset puts on Muon. ``"adamw"`` trains
    everything with AdamW at ``lr``.
    """

    def __init__(
        self,
        num_items: int,
        dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        max_len: int = 50,
        dropout: float = 0.2,
        loss: Literal["ce", "bce"] = "ce",
        optimizer: Literal["adamw", "muonrec"] = "adamw",
        lr: float = 1e-3,
        muon_lr: float = 0.02,
        weight_decay: float = 0.0,
        ks: tuple[int, ...] = (10, 50),
        embedding_device: str = "cpu",
        output: Literal["tied", "linear"] = "tied",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = SASRec(SASRecConfig(num_items, dim, num_layers, num_heads, max_len, dropout, embedding_device,
                                         output=output))
        self.val_metrics = RankingMetrics(ks=ks)
        self.test_metrics = RankingMetrics(ks=ks)

    def loss(self, batch: RetrievalBatch) -> torch.Tensor:
        if self.hparams.loss == "bce" and batch.negatives is None:
            raise ValueError("loss='bce' needs sampled negatives: set the data module's train_negatives")
        # The output rows come with the history lookup (one call of the item table, sharded or not).
        candidates = "all" if self.hparams.loss == "ce" else torch.cat([batch.targets[:, None], batch.negatives], dim=1)
        hidden, lengths, rows = self.model.encode(batch.features, candidates)
        offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(lengths)
        states = to_jagged(hidden, offsets)  # [sum(lengths), dim], aligned with batch.targets
        if self.hparams.loss == "ce":  # a mean over the global batch's positions, also under DDP
            return global_mean(F.cross_entropy(self.model.score_all(states, rows), batch.targets, reduction="sum"),
                               batch.targets.shape[0])
        pos = (states * rows[:, 0]).sum(-1)
        neg = torch.einsum("nd,nkd->nk", states, rows[:, 1:])
        return F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + F.binary_cross_entropy_with_logits(
            neg, torch.zeros_like(neg)
        )

    def update_metrics(self, batch: RetrievalBatch, metrics: RankingMetrics) -> None:
        if batch.negatives is None:
            states, table = self.model.last_state_and_rows(batch.features, "all")
            metrics.update(self.model.score_all(states, table), batch.targets)
            return
        candidates = torch.cat([batch.targets[:, None], batch.negatives], dim=1)
        states, rows = self.model.last_state_and_rows(batch.features, candidates)
        scores = torch.einsum("bd,bkd->bk", states, rows)
        collide = candidates == batch.targets[:, None]
        collide[:, 0] = False  # a sampled negative equal to the positive is dropped, not counted
        metrics.update(scores, exclude=collide)

    def training_step(self, batch: RetrievalBatch, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.batch_size)
        return loss

    def validation_step(self, batch: RetrievalBatch, batch_idx: int) -> None:
        self.update_metrics(batch, self.val_metrics)

    def test_step(self, batch: RetrievalBatch, batch_idx: int) -> None:
        self.update_metrics(batch, self.test_metrics)

    def on_validation_epoch_end(self) -> None:
        self.log_dict({f"val/{k}": v for k, v in self.val_metrics.compute().items()}, prog_bar=True)
        self.val_metrics.reset()

    def on_test_epoch_end(self) -> None:
        self.log_dict({f"test/{k}": v for k, v in self.test_metrics.compute().items()})
        self.test_metrics.reset()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        if hp.optimizer == "muonrec":
            return MuonRec.from_model(self.model, "muonrec", muon_lr=hp.muon_lr, adamw_lr=hp.lr,
                                      adamw_weight_decay=hp.weight_decay)
        return torch.optim.AdamW(dense_parameters(self), lr=hp.lr, weight_decay=hp.weight_decay)
