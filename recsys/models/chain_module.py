"""The harness shared by A2Gen and its baselines: predict, for a user and a candidate item, the probability
of each action of the chain and when it happens; evaluate per-action AUC / GAUC / LogLoss and timing MAE.

Subclasses implement :meth:`ChainRankingModule.loss` (training objective) and
:meth:`ChainRankingModule.predict` (serving output: ``probs [B, K]`` per action, ``times [B, K + 1]`` per
action and terminal, in the data's time unit: days for Tmall, video fraction for KuaiRand).

Times are learned on a log1p scale for days (a purchase 60 days after a click would otherwise dominate
a squared error) and as they are for video fractions; :func:`time_to_target` / :func:`target_to_time`
convert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import torch

from recsys.data.batches import ChainBatch
from recsys.data.chains import ChainSpec
from recsys.metrics import MaskedMAE, MultiActionMetrics
from recsys.optim import MuonRec
from recsys.optim.param_groups import dense_parameters
from recsys.optim.schedules import warmup_cosine


@dataclass
class ChainPrediction:
    probs: torch.Tensor  # [B, K] probability that each action occurs
    times: torch.Tensor  # [B, K + 1] predicted time of each action and the terminal (data units)


def time_to_target(spec: ChainSpec, t: torch.Tensor) -> torch.Tensor:
    return torch.log1p(t.clamp(min=0)) if spec.time_unit == "days" else t


def target_to_time(spec: ChainSpec, y: torch.Tensor) -> torch.Tensor:
    return torch.expm1(y).clamp(min=0) if spec.time_unit == "days" else y.clamp(min=0)


class ChainRankingModule(L.LightningModule):
    """Metrics, logging and optimizers for chain-ranking models (see the module docstring).

    Args:
        cardinalities: vocabulary size of every sparse feature (from the data module).
        spec: the chain layout as a plain dict (``ChainDataModule.spec_dict``: actions, terminal, time
            unit), plain so that checkpoints load with ``torch.load(weights_only=True)``.
        optimizer: ``"muonrec"`` (Muon for weight matrices, AdamW for tables and 1-D parameters) or
            ``"adamw"``.
        lr: AdamW learning rate (MuonRec's AdamW family too); muon_lr: Muon family learning rate.
        warmup_steps / total_steps: linear warm-up then cosine decay to 10% (0 total: constant rate).
    """

    def __init__(
        self,
        cardinalities: dict[str, int],
        spec: dict[str, Any],
        *,
        optimizer: Literal["muonrec", "adamw"] = "muonrec",
        lr: float = 1e-3,
        muon_lr: float = 0.02,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        total_steps: int = 0,
    ) -> None:
        super().__init__()
        self.spec = ChainSpec(**{**spec, "actions": tuple(spec["actions"])})
        names = list(self.spec.actions)
        self.slot_names = [*names, self.spec.terminal]
        self.val_metrics = MultiActionMetrics(names)
        self.test_metrics = MultiActionMetrics(names)
        self.val_mae = MaskedMAE(self.slot_names)
        self.test_mae = MaskedMAE(self.slot_names)

    # -- to implement ------------------------------------------------------------------------------------
    def loss(self, batch: ChainBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def predict(self, batch: ChainBatch) -> ChainPrediction:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------------
    def training_step(self, batch: ChainBatch, batch_idx: int) -> torch.Tensor:
        loss, parts = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.batch_size)
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=batch.batch_size)
        return loss

    def update_metrics(self, batch: ChainBatch, metrics: MultiActionMetrics, mae: MaskedMAE) -> None:
        pred = self.predict(batch)
        k = len(self.spec.actions)
        metrics.update(pred.probs, batch.occurred[:, :k], batch.users)
        mae.update(pred.times, batch.times, batch.occurred.bool())

    def validation_step(self, batch: ChainBatch, batch_idx: int) -> None:
        self.update_metrics(batch, self.val_metrics, self.val_mae)

    def test_step(self, batch: ChainBatch, batch_idx: int) -> None:
        self.update_metrics(batch, self.test_metrics, self.test_mae)

    def _log_epoch(self, stage: str, metrics: MultiActionMetrics, mae: MaskedMAE) -> dict[str, float]:
        values = metrics.compute()
        flat = {f"{stage}/{m}/{a}": v for a, per in values.items() for m, v in per.items()}
        flat.update({f"{stage}/mae/{a}": v for a, v in mae.compute().items() if torch.isfinite(v)})
        aucs = torch.stack([per["auc"] for per in values.values()])
        auc_mean = aucs[torch.isfinite(aucs)].mean() if torch.isfinite(aucs).any() else aucs[0]
        self.log_dict(flat, prog_bar=False)
        self.log(f"{stage}/auc_mean", auc_mean, prog_bar=True)
        flat[f"{stage}/auc_mean"] = auc_mean
        metrics.reset()
        mae.reset()
        return {k: float(v) for k, v in flat.items()}

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.val_metrics, self.val_mae)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test", self.test_metrics, self.test_mae)

    def configure_optimizers(self):  # noqa: ANN201 (Lightning's union of return types)
        hp = self.hparams
        if hp.optimizer == "muonrec":
            opt = MuonRec.from_model(self, "muonrec", muon_lr=hp.muon_lr, adamw_lr=hp.lr,
                                     adamw_weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.AdamW(dense_parameters(self), lr=hp.lr, weight_decay=hp.weight_decay)
        if not hp.total_steps:
            return opt
        schedule = warmup_cosine(opt, hp.warmup_steps, hp.total_steps, min_ratio=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
