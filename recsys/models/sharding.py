"""Sharded embedding tables under Lightning: a strategy that wraps the model in torchrec's
``DistributedModelParallel`` (DMP) instead of plain DDP.

Every model of the toolkit keeps its sparse features in torchrec ``EmbeddingCollection`` modules, so DMP
can shard them unchanged: torchrec's planner assigns each table a sharding type (table-wise: the whole
table on one rank; row-wise: a slice of rows on every rank; column-wise; data-parallel: replicated),
the lookups become all-to-alls, and everything that is not an embedding table is wrapped in DDP. Sharded
tables train with fbgemm's fused table-batched embedding (TBE) optimizer, applied inside the backward pass
(rowwise Adagrad by default, the usual choice for large tables); the LightningModule's own optimizer
(MuonRec or AdamW) steps every other parameter. Gradients of sharded rows are averaged over ranks like
DDP's (torchrec's gradient division), so the losses of :mod:`recsys.models.distributed` mean the same
thing with any number of processes.

Use it from the command line or in Python::

    recsys fit --config configs/sasrec_kuairand.yaml --trainer.strategy torchrec --trainer.devices 2
    recsys fit --config ... --trainer.strategy recsys.models.sharding.TorchrecStrategy \\
        --trainer.strategy.sharding '{item: row_wise}' --trainer.strategy.embedding_optimizer rowwise_adagrad

    L.Trainer(strategy=TorchrecStrategy(sharding={"item": "row_wise"}), devices=2, accelerator="cpu")

``sharding`` forces a table's sharding type by table name; the planner chooses for the others. The
chosen plan is logged on rank 0 (:func:`describe_plan`). Checkpoints are sharded (each rank writes the
rows it holds, :mod:`recsys.models.sharded_checkpoint`) and resume with any number of processes.

What runs where (measured with torchrec 1.9.2, fbgemm-gpu-cpu 1.9.0): on CPU, fbgemm has fused TBE kernels
for table-wise and row-wise tables with the SGD, Adagrad and rowwise-Adagrad optimizers; its dense TBE (the
kernel of data-parallel tables) ignores ``PoolingMode.NONE`` on CPU and returns pooled rows, which
:mod:`recsys.models.torchrec_cpu` works around (bags of one id), so data-parallel tables run too (they train
with the module's own optimizer, their gradients all-reduced like any dense parameter). Column-wise sharding
is left to CUDA. On CUDA every sharding type and fused Adam are available.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import nn

from recsys.models import sharded_checkpoint
from recsys.models.torchrec_cpu import patch_dense_sequence_lookup

ShardingName = Literal["table_wise", "row_wise", "column_wise", "table_row_wise", "data_parallel"]
EmbeddingOptimizer = Literal["rowwise_adagrad", "adagrad", "sgd", "adam"]
#: Sharding types that run for EmbeddingCollection tables on CPU (see the module docstring).
CPU_SHARDING_TYPES = ("table_wise", "row_wise", "data_parallel")
_OPTIMIZERS = {"rowwise_adagrad": "EXACT_ROWWISE_ADAGRAD", "adagrad": "EXACT_ADAGRAD", "sgd": "EXACT_SGD",
               "adam": "ADAM"}
_CPU_OPTIMIZERS = ("rowwise_adagrad", "adagrad", "sgd")


def embedding_tables(module: nn.Module) -> dict[str, int]:
    """Table name -> number of rows of every torchrec embedding table in ``module``."""
    from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

    tables: dict[str, int] = {}
    for sub in module.modules():
        if isinstance(sub, (EmbeddingCollection, EmbeddingBagCollection)):
            configs = sub.embedding_configs() if isinstance(sub, EmbeddingCollection) else sub.embedding_bag_configs()
            for config in configs:
                tables[config.name] = config.num_embeddings
    return tables


def sharders(embedding_optimizer: EmbeddingOptimizer, lr: float, *, eps: float = 1e-8,
             weight_decay: float = 0.0) -> list[Any]:
    """torchrec sharders for EmbeddingCollection and EmbeddingBagCollection with the fused optimizer."""
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec.distributed.embedding import EmbeddingCollectionSharder
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder

    if embedding_optimizer not in _OPTIMIZERS:
        raise ValueError(f"unknown embedding_optimizer {embedding_optimizer!r}: expected one of {sorted(_OPTIMIZERS)}")
    fused = {"optimizer": getattr(EmbOptimType, _OPTIMIZERS[embedding_optimizer]), "learning_rate": lr, "eps": eps,
             "weight_decay": weight_decay}
    return [EmbeddingCollectionSharder(fused_params=dict(fused)), EmbeddingBagCollectionSharder(fused_params=dict(fused))]


def constraints(tables: Mapping[str, int], sharding: Mapping[str, str], device: str) -> dict[str, Any]:
    """The planner's per-table constraints: a forced sharding type from ``sharding``, else (on CPU) the
    types the CPU kernels support. Raises on unknown tables or types the device cannot run."""
    from torchrec.distributed.planner import ParameterConstraints
    from torchrec.distributed.types import ShardingType

    known = {t.value for t in ShardingType}
    unknown = sorted(set(sharding) - set(tables))
    if unknown:
        raise ValueError(f"sharding names unknown table(s) {unknown}; the model's tables are {sorted(tables)}")
    out = {}
    for table in tables:
        forced = sharding.get(table)
        if forced is not None and forced not in known:
            raise ValueError(f"table {table!r}: unknown sharding type {forced!r}; expected one of {sorted(known)}")
        if device == "cpu" and forced is not None and forced not in CPU_SHARDING_TYPES:
            raise ValueError(f"table {table!r}: {forced} sharding is not run on CPU here; use one of "
                             f"{list(CPU_SHARDING_TYPES)} on CPU, or run on CUDA")
        if forced is not None:
            out[table] = ParameterConstraints(sharding_types=[forced])
        elif device == "cpu":
            out[table] = ParameterConstraints(sharding_types=list(CPU_SHARDING_TYPES))
    return out


def plan_sharding(
    module: nn.Module,
    world_size: int,
    *,
    sharding: Mapping[str, str] | None = None,
    device: str = "cpu",
    local_world_size: int | None = None,
    embedding_optimizer: EmbeddingOptimizer = "rowwise_adagrad",
    process_group: Any | None = None,
) -> Any:
    """torchrec's ``ShardingPlan`` for ``module`` on ``world_size`` devices of type ``device``.

    Without ``process_group`` this only plans (no processes needed: what ``recsys plan`` prints); with one,
    rank 0 plans and broadcasts the plan so every rank shards identically.
    """
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology

    tables = embedding_tables(module)
    topology = Topology(world_size=world_size, compute_device=device, local_world_size=local_world_size)
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints(tables, sharding or {}, device))
    shard_with = sharders(embedding_optimizer, 0.01)
    if process_group is None:
        return planner.plan(module, shard_with)
    return planner.collective_plan(module, shard_with, process_group)


def describe_plan(plan: Any) -> str:
    """One line per table: module, table, sharding type, compute kernel, and ranks with their row ranges.

    >>> print(describe_plan(plan_sharding(SASRec(SASRecConfig(num_items=1000)), 2, sharding={"item": "row_wise"})))
    ... # doctest: +SKIP
    items  item  row_wise  fused  rank 0: rows 0-499, cols 0-63, rank 1: rows 500-999, cols 0-63
    """
    lines = []
    for path, tables in plan.plan.items():
        for table, ps in tables.items():
            shards = []
            for shard in (ps.sharding_spec.shards if ps.sharding_spec is not None else []):
                rank = shard.placement.rank()
                (r0, c0), (nr, nc) = shard.shard_offsets[:2], shard.shard_sizes[:2]
                if nr and nc:  # row-wise plans of small tables leave some ranks empty
                    shards.append(f"rank {rank}: rows {r0}-{r0 + nr - 1}, cols {c0}-{c0 + nc - 1}")
            where = ", ".join(shards) if shards else f"ranks {ps.ranks}"
            lines.append(f"{path}  {table}  {ps.sharding_type}  {ps.compute_kernel}  {where}")
    return "\n".join(lines)


class TorchrecStrategy(DDPStrategy):
    """Lightning's DDP strategy with the model wrapped in torchrec's DistributedModelParallel.

    Args:
        sharding: table name -> sharding type (``table_wise``, ``row_wise``, ``column_wise``,
            ``table_row_wise``, ``data_parallel``); tables left out are planned by torchrec's planner.
        embedding_optimizer: the fused optimizer of sharded tables (``rowwise_adagrad``, ``adagrad``,
            ``sgd``; ``adam`` on CUDA only).
        embedding_lr: its learning rate (``None``: the LightningModule's ``lr`` hyperparameter, else 0.01).
        embedding_eps, embedding_weight_decay: its epsilon and weight decay.
        **kwargs: passed to Lightning's :class:`~lightning.pytorch.strategies.DDPStrategy`
            (``process_group_backend``, ``timeout``, ...).
    """

    strategy_name = "torchrec"

    def __init__(
        self,
        sharding: dict[str, ShardingName] | None = None,
        embedding_optimizer: EmbeddingOptimizer = "rowwise_adagrad",
        embedding_lr: float | None = None,
        embedding_eps: float = 1e-8,
        embedding_weight_decay: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sharding = dict(sharding or {})
        if embedding_optimizer not in _OPTIMIZERS:
            raise ValueError(f"unknown embedding_optimizer {embedding_optimizer!r}: expected one of {sorted(_OPTIMIZERS)}")
        self.embedding_optimizer = embedding_optimizer
        self.embedding_lr = embedding_lr
        self.embedding_eps = embedding_eps
        self.embedding_weight_decay = embedding_weight_decay
        self.plan: Any = None
        self._sharded_checkpoint: sharded_checkpoint.ShardedCheckpoint | None = None

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        # Restore into the sharded model: each rank loads only the rows it holds.
        return True

    def _lr(self) -> float:
        if self.embedding_lr is not None:
            return self.embedding_lr
        hparams = getattr(self.lightning_module, "hparams", {})
        return float(hparams.get("lr", 0.01)) if isinstance(hparams, Mapping) else 0.01

    def model_to_device(self) -> None:
        # Tables created on the meta device (e.g. SASRec's embedding_device="meta") stay there until
        # DistributedModelParallel materializes each rank's shard; everything else moves as usual.
        assert self.model is not None
        self.model._apply(lambda t: t if t.is_meta else t.to(self.root_device))

    def configure_ddp(self) -> None:
        from torchrec.distributed.model_parallel import DefaultDataParallelWrapper, DistributedModelParallel
        from torchrec.distributed.types import ShardingEnv

        device = self.root_device.type
        if device == "cpu" and self.embedding_optimizer not in _CPU_OPTIMIZERS:
            raise ValueError(f"embedding_optimizer {self.embedding_optimizer!r} has no CPU kernel in fbgemm; "
                             f"use one of {list(_CPU_OPTIMIZERS)} on CPU")
        if device == "cpu":
            patch_dense_sequence_lookup()  # data-parallel tables: fbgemm's CPU dense kernel pools (see its module)
        module = self.model
        assert module is not None
        pg = dist.group.WORLD
        self.plan = plan_sharding(module, self.world_size, sharding=self.sharding, device=device,
                                  local_world_size=self.num_processes, embedding_optimizer=self.embedding_optimizer,
                                  process_group=pg)
        rank_zero_info(f"torchrec sharding plan ({self.world_size} ranks, {device}):\n{describe_plan(self.plan)}")
        wrapper = DefaultDataParallelWrapper(static_graph=False,
                                             find_unused_parameters=self._ddp_kwargs.get("find_unused_parameters", False))
        self.model = DistributedModelParallel(
            module, env=ShardingEnv.from_process_group(pg), device=self.root_device, plan=self.plan,
            sharders=sharders(self.embedding_optimizer, self._lr(), eps=self.embedding_eps,
                              weight_decay=self.embedding_weight_decay),
            data_parallel_wrapper=wrapper,
        )

    @property
    def fused_optimizer(self) -> Any:
        """The fused optimizer of the sharded tables (a torchrec ``KeyedOptimizer``)."""
        return getattr(self.model, "fused_optimizer", None)

    # --- checkpoints: sharded on save, resharded on load (see recsys.models.sharded_checkpoint) ---

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("TorchrecStrategy.save_checkpoint takes no storage_options")
        fused = self.fused_optimizer
        if fused is not None:
            checkpoint = {**checkpoint, sharded_checkpoint.FUSED_KEY: fused.state_dict()}
        sharded_checkpoint.save(checkpoint, Path(filepath), rank=self.global_rank, world_size=self.world_size,
                                barrier=self.barrier)

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        self._sharded_checkpoint = sharded_checkpoint.ShardedCheckpoint(Path(checkpoint_path))
        return self._sharded_checkpoint.meta

    def load_model_state_dict(self, checkpoint: Mapping[str, Any], strict: bool = True) -> None:
        assert self.lightning_module is not None
        reader = self._reader(checkpoint)
        reader.load_into(self.lightning_module.state_dict(), checkpoint["state_dict"], self.lightning_module,
                         strict=strict)

    def load_optimizer_state_dict(self, checkpoint: Mapping[str, Any]) -> None:
        super().load_optimizer_state_dict(checkpoint)
        fused = self.fused_optimizer
        if fused is None:
            return
        saved = checkpoint.get(sharded_checkpoint.FUSED_KEY)
        if saved is None:
            raise KeyError("the checkpoint holds no fused embedding optimizer state (not written by TorchrecStrategy)")
        self._reader(checkpoint).load_fused_optimizer(fused, saved)

    def _reader(self, checkpoint: Mapping[str, Any]) -> sharded_checkpoint.ShardedCheckpoint:
        if self._sharded_checkpoint is None or self._sharded_checkpoint.meta is not checkpoint:
            raise RuntimeError("TorchrecStrategy restores checkpoints it loaded itself (a sharded checkpoint folder)")
        return self._sharded_checkpoint

    def remove_checkpoint(self, filepath: Any) -> None:
        if self.is_global_zero:
            sharded_checkpoint.remove(Path(filepath))

    def teardown(self) -> None:
        self._sharded_checkpoint = None
        super().teardown()


StrategyRegistry.register(
    TorchrecStrategy.strategy_name, TorchrecStrategy,
    description="DDP with embedding tables sharded by torchrec's DistributedModelParallel", override=True,
)
