"""``recsys bench-optim``: the same model on the same data with AdamW, MuonRec and torch.optim.Muon (+AdamW).

MuonRec's claim (arXiv 2603.00416): fewer steps to convergence and a higher NDCG@10 than Adam. Protocol
(after the paper's Sec. 4 and its ``experiments/traditional`` scripts): cosine learning-rate decay over the
step budget, early stopping on validation NDCG@10 (patience counted in evaluations), test metrics at the
best validation checkpoint, several seeds. Validation and test rank the first ``eval_per_user`` positives
of each user in the period (default 5): with one target per user the validation metric's noise was as large
as the optimizers' difference, and the best of many noisy evaluations favours whichever optimizer evaluates
more often before it stops. Learning rates come from a small sweep on the first seed:
AdamW's rate first, then Muon's rate with MuonRec's AdamW family at AdamW's best rate (the paper tunes them
separately too). ``torch-muon`` runs torch.optim.Muon on MuonRec's Muon matrices and AdamW on the rest,
with MuonRec's rates: the same algorithm, for timing and as a numerical cross-check.

The loop is plain PyTorch around the model's LightningModule (its loss and evaluation, through the
model's :class:`BenchModel` entry), so the optimizer step can be timed alone. Outputs in ``out/``: ``runs.csv`` (one row per run), ``curves.csv``
(every evaluation), ``curves.png`` (validation NDCG@10 against steps, mean and min-max band over seeds),
``summary.md``.
"""

from __future__ import annotations

import copy
import csv
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from recsys.metrics import RankingMetrics
from recsys.optim.muonrec import MuonRec
from recsys.optim.param_groups import build_param_groups
from recsys.optim.schedules import warmup_cosine

OPTIMIZERS = ("adamw", "muonrec", "torch-muon")


@dataclass
class BenchModel:
    """How to build a benchmarkable model and its data, its training loss, and its evaluation.

    ``data(path, seed, eval_per_user)`` builds the data module (``eval_per_user``: validation/test targets
    per user, ``None`` for all; A2Gen's data scores every impression of the period and ignores it). ``metrics[0]`` is the
    early-stopping monitor and ``metrics[1]`` a second figure for the tables."""

    data: Callable[[Path, int, int | None], L.LightningDataModule]
    module: Callable[[L.LightningDataModule], L.LightningModule]
    loss: Callable[[L.LightningModule, Any], torch.Tensor]
    evaluate: Callable[[L.LightningModule, Any], dict[str, float]]
    metrics: tuple[str, ...]

    @property
    def monitor(self) -> str:
        return self.metrics[0]


def _ranking_eval(module: L.LightningModule, loader: Any) -> dict[str, float]:
    metrics = RankingMetrics(ks=(10, 50))
    for batch in loader:
        module.update_metrics(batch, metrics)
    return {k: float(v) for k, v in metrics.compute().items()}


def _chain_eval(module: L.LightningModule, loader: Any) -> dict[str, float]:
    from recsys.metrics import MaskedMAE, MultiActionMetrics

    actions = MultiActionMetrics(list(module.spec.actions), metrics=("auc",))
    mae = MaskedMAE(module.slot_names)
    for batch in loader:
        module.update_metrics(batch, actions, mae)
    aucs = {f"auc/{a}": float(v["auc"]) for a, v in actions.compute().items()}
    return {"auc_mean": sum(aucs.values()) / len(aucs), **aucs, **{f"mae/{a}": float(v) for a, v in mae.compute().items()}}


def _sasrec() -> BenchModel:
    from recsys.data.retrieval import RetrievalDataModule
    from recsys.models.sasrec_module import SASRecModule

    return BenchModel(
        data=lambda path, seed, eval_per_user: RetrievalDataModule(
            path, positive="click", max_len=50, batch_size=128, eval_batch_size=1024, eval_per_user=eval_per_user,
            seed=seed),
        module=lambda dm: SASRecModule(dm.num_items, dim=64, num_layers=2, num_heads=2, max_len=50, dropout=0.2),
        loss=lambda module, batch: module.loss(batch),
        evaluate=_ranking_eval,
        metrics=("ndcg@10", "hr@10", "ndcg@50", "hr@50", "mrr"),
    )


def _sasrec_head() -> BenchModel:
    """``sasrec`` with MuonRec's own SASRec output: a separate item-scoring matrix (``output="linear"``),
    which the ``muonrec`` preset trains with Muon (arXiv 2603.00416; ``../shared/PAPERS.md`` Sec. 3.3)."""
    from recsys.models.sasrec_module import SASRecModule

    base = _sasrec()
    base.module = lambda dm: SASRecModule(dm.num_items, dim=64, num_layers=2, num_heads=2, max_len=50, dropout=0.2,
                                          output="linear")
    return base


def _a2gen() -> BenchModel:
    from recsys.data.chain_ranking import ChainDataModule
    from recsys.models.a2gen import A2GenModule

    return BenchModel(
        data=lambda path, seed, eval_per_user: ChainDataModule(path, max_len=30, batch_size=256, seed=seed),
        module=lambda dm: A2GenModule(dm.feature_cardinalities, dm.spec_dict),
        loss=lambda module, batch: module.loss(batch)[0],
        evaluate=_chain_eval,
        metrics=("auc_mean",),
    )


def _gems_eval(module: L.LightningModule, loader: Any) -> dict[str, float]:
    from recsys.models.gems_module import SumMetric

    metrics = SumMetric()
    for batch in loader:
        module._evaluate(batch, metrics)
    return metrics.compute()


def _gems() -> BenchModel:
    from recsys.data.lifelong import LifelongDataModule
    from recsys.models.gems_module import GEMsModule

    return BenchModel(
        data=lambda path, seed, eval_per_user: LifelongDataModule(path, recent=64, mid=1024, max_train_per_user=200,
                                                                  eval_per_user=eval_per_user, seed=seed),
        module=lambda dm: GEMsModule(dm.semantic_ids_path, dm.feature_cardinalities, item_attributes=dm.item_attributes_path, beam_width=100, ks=[10, 50, 100]),
        loss=lambda module, batch: module.loss(batch)[0],
        evaluate=_gems_eval,
        metrics=("recall@10", "ndcg@10", "recall@50", "recall@100"),
    )


#: Models that can be benchmarked (``--model``).
MODELS: dict[str, Callable[[], BenchModel]] = {"sasrec": _sasrec, "sasrec-head": _sasrec_head, "a2gen": _a2gen,
                                             "gems": _gems}


class _TorchMuonWithAdamW:
    """torch.optim.Muon for the Muon family and torch.optim.AdamW for the rest, stepped together."""

    def __init__(self, model: torch.nn.Module, muon_lr: float, adamw_lr: float, weight_decay: float) -> None:
        muon, adamw = build_param_groups(model, "muonrec")
        self.optimizers = [torch.optim.Muon(muon["params"], lr=muon_lr, weight_decay=0.0),
                           torch.optim.AdamW(adamw["params"], lr=adamw_lr, weight_decay=weight_decay)]
        self.param_groups = [g for opt in self.optimizers for g in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)


def make_optimizer(name: str, model: torch.nn.Module, lr: float, muon_lr: float, weight_decay: float = 0.0) -> Any:
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "muonrec":
        return MuonRec.from_model(model, "muonrec", muon_lr=muon_lr, adamw_lr=lr, adamw_weight_decay=weight_decay)
    if name == "torch-muon":
        return _TorchMuonWithAdamW(model, muon_lr, lr, weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: expected one of {OPTIMIZERS}")


@dataclass
class Run:
    optimizer: str
    lr: float
    muon_lr: float | None
    seed: int
    steps_to_best: int = 0
    steps_run: int = 0
    best_val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0  # forward, backward and optimizer steps, evaluation excluded
    seconds_to_best: float = 0.0  # training seconds until the best evaluation
    ms_per_step: float = 0.0  # the optimizer step alone (median)
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # step, train seconds, monitor


def _evaluate(spec: BenchModel, module: L.LightningModule, loader: Any) -> dict[str, float]:
    module.eval()
    with torch.no_grad():
        values = spec.evaluate(module, loader)
    module.train()
    return values


def train_one(
    spec: BenchModel, data: L.LightningDataModule, optimizer: str, lr: float, muon_lr: float | None, seed: int,
    *, max_epochs: int, patience: int, evals_per_epoch: int, log: Callable[[str], None] = print,
) -> Run:
    """Train until early stopping (or ``max_epochs``); test at the best validation evaluation."""
    L.seed_everything(seed, verbose=False)
    module = spec.module(data)
    opt = make_optimizer(optimizer, module, lr, muon_lr if muon_lr is not None else 0.0)
    train = data.train_dataloader()
    steps_per_epoch = len(train)
    total = steps_per_epoch * max_epochs
    schedulers = [warmup_cosine(o, 0, total) for o in getattr(opt, "optimizers", [opt])]
    eval_every = max(1, steps_per_epoch // evals_per_epoch)
    run = Run(optimizer, lr, muon_lr, seed)
    best, best_state, waited, step, step_times = -1.0, None, 0, 0, []
    module.train()
    stop = False
    for _epoch in range(max_epochs):
        for batch in train:
            started = time.perf_counter()
            loss = spec.loss(module, batch)
            opt.zero_grad()
            loss.backward()
            t_step = time.perf_counter()
            opt.step()
            step_times.append(time.perf_counter() - t_step)
            for s in schedulers:
                s.step()
            run.train_seconds += time.perf_counter() - started
            step += 1
            if step % eval_every:
                continue
            val = _evaluate(spec, module, data.val_dataloader())
            run.curve.append((step, run.train_seconds, val[spec.monitor]))
            if val[spec.monitor] > best:
                best, waited = val[spec.monitor], 0
                best_state = copy.deepcopy(module.state_dict())
                run.steps_to_best, run.seconds_to_best, run.best_val = step, run.train_seconds, val
            else:
                waited += 1
                if waited >= patience:
                    stop = True
                    break
        if stop:
            break
    run.steps_run = step
    run.ms_per_step = statistics.median(step_times) * 1000
    module.load_state_dict(best_state)
    run.test = _evaluate(spec, module, data.test_dataloader())
    log(f"  {optimizer:10s} lr={lr:g} muon_lr={muon_lr} seed={seed}: best val {spec.monitor} {best:.4f} at step "
        f"{run.steps_to_best} ({run.seconds_to_best:.0f} s), test {spec.monitor} {run.test[spec.monitor]:.4f}, "
        f"{run.ms_per_step:.2f} ms/step")
    return run


def bench(
    *,
    model: str = "sasrec",
    data: Path,
    out: Path,
    seeds: list[int],
    adamw_lrs: list[float],
    muon_lrs: list[float],
    optimizers: list[str] = list(OPTIMIZERS),
    max_epochs: int = 30,
    patience: int = 8,
    evals_per_epoch: int = 4,
    eval_per_user: int | None = 5,
    log: Callable[[str], None] = print,
) -> str:
    """Sweep, then run every optimizer over ``seeds``; write CSV, PNG and a markdown summary."""
    spec = MODELS[model]()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dm = spec.data(data, seeds[0], eval_per_user)
    dm.setup()
    kw = dict(max_epochs=max_epochs, patience=patience, evals_per_epoch=evals_per_epoch, log=log)
    runs: list[tuple[str, Run]] = []
    log(f"sweep (seed {seeds[0]}): AdamW lr in {adamw_lrs}")
    sweep_adamw = [train_one(spec, dm, "adamw", lr, None, seeds[0], **kw) for lr in adamw_lrs]
    best_adamw = max(sweep_adamw, key=lambda r: r.best_val[spec.monitor])
    log(f"sweep (seed {seeds[0]}): MuonRec muon_lr in {muon_lrs}, AdamW family at lr {best_adamw.lr:g}")
    sweep_muon = [train_one(spec, dm, "muonrec", best_adamw.lr, m, seeds[0], **kw) for m in muon_lrs]
    best_muon = max(sweep_muon, key=lambda r: r.best_val[spec.monitor])
    runs += [("sweep", r) for r in sweep_adamw + sweep_muon]
    chosen = {"adamw": (best_adamw.lr, None), "muonrec": (best_adamw.lr, best_muon.muon_lr),
              "torch-muon": (best_adamw.lr, best_muon.muon_lr)}
    finals: dict[str, list[Run]] = {}
    for name in optimizers:
        lr, muon_lr = chosen[name]
        finals[name] = []
        for seed in seeds:
            reuse = {"adamw": best_adamw, "muonrec": best_muon}.get(name) if seed == seeds[0] else None
            data_seed = dm if seed == seeds[0] else spec.data(data, seed, eval_per_user)
            finals[name].append(reuse or train_one(spec, data_seed, name, lr, muon_lr, seed, **kw))
        runs += [("final", r) for r in finals[name] if all(r is not s for _, s in runs)]
    _write_csv(out, runs, spec.metrics)
    _plot(out / "curves.png", finals, spec.monitor)
    text = _summary(model, data, finals, sweep_adamw, sweep_muon, spec.metrics, eval_per_user)
    (out / "summary.md").write_text(text)
    return text


def _write_csv(out: Path, runs: list[tuple[str, Run]], metrics: tuple[str, ...]) -> None:
    with (out / "runs.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phase", "optimizer", "lr", "muon_lr", "seed", "steps_to_best", "steps_run", "seconds_to_best",
                    "train_seconds", "ms_per_step", *(f"val_{m}" for m in metrics), *(f"test_{m}" for m in metrics)])
        for phase, r in runs:
            w.writerow([phase, r.optimizer, r.lr, r.muon_lr, r.seed, r.steps_to_best, r.steps_run,
                        round(r.seconds_to_best, 3), round(r.train_seconds, 3), round(r.ms_per_step, 4),
                        *(round(r.best_val[m], 6) for m in metrics), *(round(r.test[m], 6) for m in metrics)])
    with (out / "curves.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phase", "optimizer", "lr", "muon_lr", "seed", "step", "train_seconds", f"val_{metrics[0]}"])
        for phase, r in runs:
            for step, secs, value in r.curve:
                w.writerow([phase, r.optimizer, r.lr, r.muon_lr, r.seed, step, round(secs, 3), round(value, 6)])


def _plot(path: Path, finals: dict[str, list[Run]], monitor: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for name, runs in finals.items():
        steps = sorted({s for r in runs for s, *_ in r.curve})
        rows = []
        for s in steps:
            values = [dict((st, v) for st, _, v in r.curve).get(s) for r in runs]
            values = [v for v in values if v is not None]
            rows.append((s, statistics.mean(values), min(values), max(values)))
        xs = [r[0] for r in rows]
        ax.plot(xs, [r[1] for r in rows], label=f"{name} (mean of {len(runs)} seeds)")
        ax.fill_between(xs, [r[2] for r in rows], [r[3] for r in rows], alpha=0.2)
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel(f"validation {monitor}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _first_step_reaching(run: Run, target: float) -> tuple[int | None, float | None]:
    for step, secs, value in run.curve:
        if value >= target:
            return step, secs
    return None, None


def _summary(model: str, data: Path, finals: dict[str, list[Run]], sweep_adamw: list[Run], sweep_muon: list[Run],
             metrics: tuple[str, ...], eval_per_user: int | None) -> str:
    def mean(xs: list[float]) -> float:
        return statistics.mean(xs)

    monitor, second = metrics[0], metrics[1 if len(metrics) > 1 else 0]
    per_user = "all" if eval_per_user is None else eval_per_user
    lines = [f"# bench-optim: {model} on {data}", "", f"Validation and test targets per user: {per_user}.", "",
             "## Sweep (first seed)", "",
             f"| optimizer | lr | muon_lr | best val {monitor} | steps to best |", "| :-- | --: | --: | --: | --: |"]
    for r in sweep_adamw + sweep_muon:
        lines.append(f"| {r.optimizer} | {r.lr:g} | {r.muon_lr if r.muon_lr is not None else '-'} "
                     f"| {r.best_val[monitor]:.4f} | {r.steps_to_best} |")
    lines += ["", "## Chosen rates, all seeds (mean ± sd)", "",
              f"| optimizer | lr | muon_lr | seeds | steps to best | train s to best | best val {monitor} "
              f"| best val {second} | test {monitor} | test {second} | ms / optimizer step |",
              "| :-- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |"]

    def ms(xs: list[float]) -> str:
        return f"{mean(xs):.4g} ± {statistics.stdev(xs):.2g}" if len(xs) > 1 else f"{xs[0]:.4g}"

    for name, runs in finals.items():
        r0 = runs[0]
        lines.append(
            f"| {name} | {r0.lr:g} | {r0.muon_lr if r0.muon_lr is not None else '-'} | {len(runs)} "
            f"| {ms([r.steps_to_best for r in runs])} | {ms([r.seconds_to_best for r in runs])} "
            f"| {ms([r.best_val[monitor] for r in runs])} | {ms([r.best_val[second] for r in runs])} "
            f"| {ms([r.test[monitor] for r in runs])} | {ms([r.test[second] for r in runs])} "
            f"| {ms([r.ms_per_step for r in runs])} |")
    if "adamw" in finals and "muonrec" in finals:
        target = mean([r.best_val[monitor] for r in finals["adamw"]])
        reach = [_first_step_reaching(r, target) for r in finals["muonrec"]]
        adamw_steps = mean([r.steps_to_best for r in finals["adamw"]])
        adamw_secs = mean([r.seconds_to_best for r in finals["adamw"]])
        lines += ["", f"AdamW's mean best validation {monitor}: {target:.4f} (at {adamw_steps:.0f} steps, "
                  f"{adamw_secs:.0f} s of training on average)."]
        if all(s is not None for s, _ in reach):
            steps = mean([s for s, _ in reach])
            secs = mean([t for _, t in reach])
            lines.append(f"MuonRec reaches it after {steps:.0f} steps ({1 - steps / adamw_steps:+.1%} fewer steps than "
                         f"AdamW's best) and {secs:.0f} s ({1 - secs / adamw_secs:+.1%} less time).")
        else:
            lines.append(f"MuonRec reaches it in {sum(s is not None for s, _ in reach)} of {len(reach)} seeds.")
        muon_best = mean([r.best_val[monitor] for r in finals["muonrec"]])
        lines.append(f"MuonRec's own mean best validation {monitor}: {muon_best:.4f} ({muon_best / target - 1:+.1%} vs AdamW).")
    lines.append("")
    return "\n".join(lines)


def to_dict(run: Run) -> dict[str, Any]:
    return asdict(run)
