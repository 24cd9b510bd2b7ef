"""A2Gen vs MMoE, PLE and DIN on action-chain ranking: per-action AUC / GAUC and timing MAE (issue #4 §5),
and CPU speed: training samples/s and the latency of scoring 1,000 candidates for one user (§6).

Data: synthetic Tmall-format and KuaiRand-format releases (``recsys.data.synth``, whose generative process
plants a per-(user, topic) action style that drives which actions follow and when), prepared and turned
into action chains. Every model trains with the same recipe through Lightning: MuonRec (``lr`` for the
AdamW family, ``muon_lr`` for the matrices), validation twice per epoch, early stopping on the validation
mean AUC over actions, test metrics at the best checkpoint, over several seeds.

    .venv/bin/python benchmarks/a2gen_results.py [--seeds 0 1 2] [--out benchmarks/_work/a2gen]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from recsys.data.chain_ranking import ChainDataModule
from recsys.data.demo import demo_dataset
from recsys.models.a2gen import A2GenModule
from recsys.models.din import DIN
from recsys.models.mmoe import MMoE
from recsys.models.ple import PLE

MODELS = {"A2Gen (IAG)": A2GenModule, "MMoE": MMoE, "PLE": PLE, "DIN": DIN}
DATASETS = {"Tmall-format": ("tmall", 3000, 3000), "KuaiRand-format": ("kuairand-pure", 3000, 2000)}
RECIPE = {"lr": 3e-3, "muon_lr": 5e-3}


def train_and_test(model_cls, dm: ChainDataModule, seed: int, work: Path, max_epochs: int) -> dict:
    L.seed_everything(seed, verbose=False)
    model = model_cls(dm.feature_cardinalities, dm.spec_dict, **RECIPE)
    ckpt = ModelCheckpoint(dirpath=work, monitor="val/auc_mean", mode="max", filename="best")
    trainer = L.Trainer(max_epochs=max_epochs, val_check_interval=0.5, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[ckpt, EarlyStopping("val/auc_mean", mode="max", patience=2)])
    started = time.perf_counter()
    trainer.fit(model, dm)
    fit_seconds = time.perf_counter() - started
    result = trainer.test(model, dm, ckpt_path=ckpt.best_model_path, verbose=False)[0]
    return {**result, "fit_seconds": fit_seconds, "epochs": trainer.current_epoch}


def training_throughput(model_cls, dm: ChainDataModule, steps: int = 20) -> float:
    """Training samples/s: forward, backward and optimizer step on real batches (data loading excluded)."""
    torch.manual_seed(0)
    model = model_cls(dm.feature_cardinalities, dm.spec_dict, **RECIPE)
    opt = model.configure_optimizers()
    batches = []
    for batch in dm.train_dataloader():
        batches.append(batch)
        if len(batches) == steps + 3:
            break
    for batch in batches[:3]:  # warm-up
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    started = time.perf_counter()
    n = 0
    for batch in batches[3:]:
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += batch.batch_size
    return n / (time.perf_counter() - started)


def scoring_latency_ms(model_cls, dm: ChainDataModule, candidates: int = 1000, repeats: int = 20) -> float:
    """Median ms to score ``candidates`` items for one user (one batch: the user's history and context
    with every candidate), eval mode, no grad."""
    torch.manual_seed(0)
    model = model_cls(dm.feature_cardinalities, dm.spec_dict, **RECIPE).eval()
    samples = dm.samples("test")
    one = samples.__getitems__([0])
    batch = samples.__getitems__([0] * candidates)  # the same user, history and context ...
    kjt = batch.features.to_dict()
    items = torch.randint(1, dm.feature_cardinalities["item"], (candidates,))  # ... and 1,000 candidates
    values, lengths = [], []
    for key in batch.features.keys():
        jt = kjt[key]
        values.append(items if key == "item" else jt.values())
        lengths.append(jt.lengths())
    batch.features = type(batch.features).from_lengths_sync(
        keys=batch.features.keys(), values=torch.cat(values), lengths=torch.cat(lengths))
    del one
    times = []
    with torch.no_grad():
        for _ in range(repeats + 3):
            started = time.perf_counter()
            model.predict(batch)
            times.append(time.perf_counter() - started)
    return statistics.median(times[3:]) * 1000


def fmt(values: list[float]) -> str:
    if not values or any(v != v for v in values):
        return "-"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "_work" / "a2gen")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    lines = [f"# A2Gen vs baselines (seeds {args.seeds}; recipe {RECIPE}, muonrec, early stopping on val AUC)", ""]
    speed = []
    for ds_name, (dataset, users, items) in DATASETS.items():
        prepared, _ = demo_dataset(args.out, dataset=dataset, users=users, items=items, log=print)
        dm = ChainDataModule(prepared, max_len=30, batch_size=256)
        dm.setup()
        spec = dm.spec
        slots = [*spec.actions, spec.terminal]
        results: dict[str, list[dict]] = {}
        for name in args.models:
            results[name] = []
            for seed in args.seeds:
                r = train_and_test(MODELS[name], dm, seed, args.out / "ckpt" / ds_name / name / str(seed), args.max_epochs)
                results[name].append(r)
                print(ds_name, name, seed, {k: round(v, 4) for k, v in r.items() if "auc/" in k}, flush=True)
            speed.append((ds_name, name, training_throughput(MODELS[name], dm), scoring_latency_ms(MODELS[name], dm)))
        header = ["model", *[f"AUC {a}" for a in spec.actions], *[f"GAUC {a}" for a in spec.actions],
                  *[f"MAE {a}" for a in slots if spec.action_times_known or a == spec.terminal]]
        lines += [f"## {ds_name} ({len(dm.samples('train')):,} train / {len(dm.samples('valid')):,} valid / "
                  f"{len(dm.samples('test')):,} test chains; time unit: {spec.time_unit})", "",
                  "| " + " | ".join(header) + " |", "| :-- |" + " --: |" * (len(header) - 1)]
        for name, runs in results.items():
            cells = [fmt([r[f"test/auc/{a}"] for r in runs]) for a in spec.actions]
            cells += [fmt([r[f"test/gauc/{a}"] for r in runs]) for a in spec.actions]
            cells += [fmt([r.get(f"test/mae/{a}", float("nan")) for r in runs]) for a in slots
                      if spec.action_times_known or a == spec.terminal]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## CPU speed (2 threads)", "",
              "| data | model | training samples/s | score 1,000 candidates for one user (ms) |",
              "| :-- | :-- | --: | --: |"]
    lines += [f"| {d} | {m} | {s:,.0f} | {ms:.1f} |" for d, m, s, ms in speed]
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
