"""GEMs as a LightningModule: next-SID training with the three-stage schedule, and evaluation by beam
search constrained to valid semantic IDs (beam width = the number of items returned).

Stages (GEMs Sec. 3.6 [S]): the first ``stage_epochs[0]`` epochs train densely without the indexer
loss, the next ``stage_epochs[1]`` add the indexer loss, after that the mid-term stream reads only its
top-K keys per query (as at serving time). Evaluation follows the current stage, or a loaded checkpoint's.

Metrics: Recall@K and NDCG@K of the target item in the returned list (one target per sample, so
Recall@K = HR@K), K in ``ks``; and the recall of each SID level (the target's first ``l`` tokens are the
first ``l`` tokens of some returned beam), the paper's hierarchical recall.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import lightning as L
import torch
import torch.distributed as dist

from recsys.data.lifelong import STREAMS, LifelongBatch, read_item_attributes
from recsys.metrics.ranking import metrics_from_rank
from recsys.models.beam_search import constrained_beam_search
from recsys.models.gems import GEMs, GEMsConfig
from recsys.models.semantic_ids import SemanticIds
from recsys.optim import MuonRec
from recsys.optim.param_groups import dense_parameters
from recsys.optim.schedules import warmup_cosine


class SumMetric:
    """Sums of per-sample values and a count (reset per epoch); under data parallelism ``compute`` sums them
    over the ranks (every rank evaluates the same number of batches: :mod:`recsys.data.sharding`)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def update(self, values: dict[str, torch.Tensor]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.sum())
        self.count += int(next(iter(values.values())).numel())

    def compute(self) -> dict[str, float]:
        keys = sorted(self.sums)
        totals = torch.tensor([self.sums[k] for k in keys] + [float(self.count)], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(totals)
        count = max(float(totals[-1]), 1.0)
        return {k: float(v) / count for k, v in zip(keys, totals[:-1], strict=True)}


def stage_of_epoch(epoch: int, stage_epochs: Sequence[int]) -> int:
    """The training stage (1 dense, 2 plus the indexer loss, 3 top-K) of a 0-based ``epoch``."""
    first, second = stage_epochs
    return 1 if epoch < first else 2 if epoch < first + second else 3


class GEMsModule(L.LightningModule):
    """GEMs (see :mod:`recsys.models.gems`).

    Args:
        semantic_ids: folder of saved :class:`SemanticIds` (the data module builds and links them).
        cardinalities: vocabulary sizes of the batch's sparse keys (linked from the data module).
        item_attributes: file of the items' attributes embedded with every event (tags, video duration;
            linked from the data module's ``item_attributes_path``); ``None``: item and author only.
        play_time: embed each event's play time (linked from the data module's ``event_play_time``: true where
            the events have play times, e.g. KuaiRand).
        streams: the streams used (ablations: drop ``"life"`` or ``"mid"``; ``["recent"]`` alone is the
            TIGER-style recent-only baseline).
        fusion: ``"sum"`` of the streams' updates (the paper's parameter-free fusion), their ``"mean"``
            (an ablation of the fusion's scale) or ``"gated"`` (learned per-stream gains starting from the
            first stream alone; our addition).
        age_buckets: event-age buckets, ``"log2"`` (doubling widths) or ``"daily"`` (one a day up to 60
            days; :data:`recsys.models.gems.AGE_EDGES`).
        shared_top_k: at a beam-search step, the beams of a user read this many mid-term keys chosen together
            (each key's best indexer score over them) instead of each its own ``top_k``; a serving choice
            (:mod:`recsys.models.shared_index`), ``None``: per query as in the paper.
        stage_epochs: epochs of stage 1 (dense) and stage 2 (plus indexer loss) before stage 3 (top-K).
        beam_width: items returned per sample at evaluation (the largest K of ``ks``).
        lr_schedule: ``"constant"`` rates, or ``"cosine"``: a linear warm-up over ``warmup_fraction`` of the
            run's steps (the trainer's estimate), then both MuonRec families' rates decay to 10% by the end,
            so the later epochs (stages 2-3: the indexer's loss, then its top-K read) train at lower rates
            (at constant rates the 1,000-user benchmark runs peaked in validation after their first epoch;
            with this schedule every run improved to its last: BENCHMARKS.md, GEMs).
    """

    def __init__(
        self,
        semantic_ids: str,
        cardinalities: dict[str, int],
        item_attributes: str | None = None,
        play_time: bool = False,
        dim: int = 64,
        heads: int = 4,
        layers: int = 2,
        encoder_layers: int = 2,
        streams: list[str] = list(STREAMS),  # noqa: B006 (read-only default)
        recent: int = 64,
        top_k: int = 64,
        shared_top_k: int | None = None,
        indexer_heads: int = 2,
        indexer_dim: int = 16,
        summary_tokens: int = 8,
        dropout: float = 0.1,
        fusion: Literal["sum", "mean", "gated"] = "sum",
        age_buckets: Literal["log2", "daily"] = "log2",
        stage_epochs: list[int] = [1, 1],  # noqa: B006
        indexer_weight: float = 1.0,
        recon_weight: float = 0.1,
        beam_width: int = 100,
        ks: list[int] = [10, 50, 100],  # noqa: B006
        optimizer: Literal["muonrec", "adamw"] = "muonrec",
        lr: float = 1e-3,
        muon_lr: float = 0.02,
        weight_decay: float = 0.0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        warmup_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.semantic_ids = SemanticIds.load(semantic_ids)
        self.register_buffer("sid_codes", self.semantic_ids.codes.clone(), persistent=False)
        self.codebook_sizes = tuple(int(c) for c in self.semantic_ids.codebook_sizes)
        self.trie = self.semantic_ids.trie()
        attributes = read_item_attributes(item_attributes) if item_attributes else {}
        config = GEMsConfig.from_hparams(dict(self.hparams), self.codebook_sizes,
                                         {k: (card, ids.shape[1]) for k, (ids, card) in attributes.items()})
        self.model = GEMs(config, {k: ids for k, (ids, _) in attributes.items()})
        self.val_metrics, self.test_metrics = SumMetric(), SumMetric()
        self.checkpoint_epoch: int | None = None  # the epoch a loaded checkpoint was written in

    @property
    def stage(self) -> int:
        """The stage of the current epoch; outside training, that of the epoch the loaded checkpoint was
        written in (a best checkpoint from stage 2 is tested as it was validated, with dense mid-term
        attention, even by the trainer that went on to stage 3)."""
        if self._trainer is None:
            return 3
        if self.checkpoint_epoch is not None and not self.trainer.training:
            return stage_of_epoch(self.checkpoint_epoch, self.hparams.stage_epochs)
        return stage_of_epoch(self.current_epoch, self.hparams.stage_epochs)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.checkpoint_epoch = checkpoint.get("epoch")

    def on_train_start(self) -> None:
        self.checkpoint_epoch = None  # training (or resuming) follows the epochs again

    def loss(self, batch: LifelongBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        hp = self.hparams
        out = self.model(batch.features, batch.ages, batch.actions, self.sid_codes[batch.targets], stage=self.stage,
                         plays=batch.plays)
        total = out["ntp"]
        if self.stage >= 2 and "mid" in hp.streams:
            total = total + hp.indexer_weight * out["indexer"]
        if "recon" in out:
            total = total + hp.recon_weight * out["recon"]
        return total, {k: v.detach() for k, v in out.items()}

    def training_step(self, batch: LifelongBatch, batch_idx: int) -> torch.Tensor:
        loss, parts = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.batch_size)
        for k, v in parts.items():
            self.log(f"train/{k}", v, batch_size=batch.batch_size)
        return loss

    @torch.no_grad()
    def recommend(self, batch: LifelongBatch, beam_width: int | None = None, stage: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Constrained beam search: ``(items [B, W], sids [B, W, L], scores [B, W])`` best first (item -1:
        no valid SID); a score is the sum of the SID tokens' log-probabilities. ``stage`` overrides the
        schedule's (1: dense mid-term attention, 3: top-K through the indexer)."""
        width = beam_width or self.hparams.beam_width
        memories = self.model.encode(batch.features, batch.ages, batch.actions, plays=batch.plays)
        memory_kv = self.model.memory_kv(memories)
        stage = stage or self.stage

        def step(prefix: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
            beams = prefix.shape[0] // batch.batch_size  # 1 at the first level (decoded once per user)
            return self.model.step(prefix, state, memories, memory_kv, beams, stage)

        self.trie = self.trie.to(batch.targets.device)
        sids, scores = constrained_beam_search(step, batch.batch_size, len(self.codebook_sizes), self.codebook_sizes,
                                               width, self.trie, state={}, device=batch.targets.device,
                                               first_step_per_row=True)
        return self.semantic_ids.item_of(sids), sids, scores

    def _evaluate(self, batch: LifelongBatch, metrics: SumMetric) -> None:
        items, sids, _ = self.recommend(batch)
        hit = items == batch.targets[:, None]
        rank = torch.where(hit.any(1), hit.float().argmax(1), torch.full_like(batch.targets, items.shape[1]))
        values = metrics_from_rank(rank, [k for k in self.hparams.ks if k <= items.shape[1]])
        values = {k: v for k, v in values.items() if not k.startswith("hr")}  # HR@K == Recall@K here
        target = self.sid_codes[batch.targets]
        for level in range(1, len(self.codebook_sizes) + 1):
            same = (sids[:, :, :level] == target[:, None, :level]).all(-1).any(1)
            values[f"recall_level{level}"] = same.float()
        metrics.update(values)

    def validation_step(self, batch: LifelongBatch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def test_step(self, batch: LifelongBatch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics)

    def _log(self, stage: str, metrics: SumMetric) -> None:
        values = metrics.compute()
        main = f"recall@{self.hparams.ks[0]}"
        self.log_dict({f"{stage}/{k}": v for k, v in values.items() if k != main}, prog_bar=False)
        if main in values:
            self.log(f"{stage}/{main}", values[main], prog_bar=True)
        metrics.__init__()

    def on_validation_epoch_end(self) -> None:
        self._log("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log("test", self.test_metrics)

    def configure_optimizers(self):  # noqa: ANN201 (Lightning's union of return types)
        hp = self.hparams
        if hp.optimizer == "muonrec":
            opt = MuonRec.from_model(self.model, "muonrec", muon_lr=hp.muon_lr, adamw_lr=hp.lr,
                                     adamw_weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.AdamW(dense_parameters(self), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.lr_schedule == "constant":
            return opt
        total = int(self.trainer.estimated_stepping_batches)
        schedule = warmup_cosine(opt, round(hp.warmup_fraction * total), total, min_ratio=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
