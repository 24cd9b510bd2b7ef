"""FP8 E4M3 post-training quantization: per-layer statistics (issue #6 §1) and quality (§4).

Models, trained here with the recipes of the results benchmarks:

* **GEMs** (generative retrieval; ``gems_results.py``'s data and recipe, seed 0): test Recall@K / NDCG@10 of
  beam search (beam 500 = the largest K), unquantized vs FP8, the top-10 overlap and the top-1 change rate;
* **A2Gen** (``a2gen_results.py``'s Tmall-format data and recipe, several seeds): per-action test AUC change;
* **PLE** (a traditional multi-task ranker, seed 0): for the statistics, and its AUC change for comparison.

FP8 variants: per-token dynamic activation scales (the paper) and static per-tensor scales calibrated on
validation batches; weights per output channel; the reference backend (dequantize, fp32 matmul: on CPU,
``torch._scaled_mm`` computes the same numbers, see tests/quant). Targets (issue #6 §4): relative Recall@K
drop <= 1%, top-10 overlap >= 0.95, per-action AUC change <= 0.002.

    .venv/bin/python benchmarks/fp8_quality.py [--seeds 0 1 2] [--out benchmarks/_work/fp8]
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path

import lightning as L
import torch
from a2gen_results import DATASETS as CHAIN_DATA
from a2gen_results import train_and_test
from gems_results import DATA as GEMS_DATA
from gems_results import TEST_BEAM, TEST_KS, data_module, run_gems

from recsys.data.chain_ranking import ChainDataModule
from recsys.data.demo import demo_dataset
from recsys.metrics.ranking import metrics_from_rank
from recsys.models.a2gen import A2GenModule
from recsys.models.gems_module import GEMsModule
from recsys.models.ple import PLE
from recsys.quant import Fp8Config, collect_statistics, quantize_fp8
from recsys.quant.stats import plot_statistics, summary_row, write_csv

CALIBRATION_BATCHES = 8


def variants(module: L.LightningModule, calibrate) -> tuple[dict[str, tuple[L.LightningModule, str]], list]:
    """fp32, FP8 dynamic and FP8 static copies of ``module`` (with their PTQ reports), and the fp32 model's
    per-layer statistics over the calibration batches (the static scales come from them)."""
    stats = collect_statistics(module, calibrate(module))
    absmax = {s.name: s.act_absmax for s in stats if s.kind == "linear"}
    out = {"fp32": (module, "")}
    for activation in ("dynamic", "static"):
        q = copy.deepcopy(module)
        report = quantize_fp8(q, Fp8Config(activation=activation, backend="reference"), activation_absmax=absmax)
        out[f"fp8 {activation}"] = (q.eval(), report.to_markdown())
    return out, stats


@torch.no_grad()
def gems_outputs(module: GEMsModule, batches: list) -> tuple[torch.Tensor, torch.Tensor]:
    items, targets = [], []
    for batch in batches:
        items.append(module.recommend(batch, TEST_BEAM)[0])
        targets.append(batch.targets)
    return torch.cat(items), torch.cat(targets)


def gems_section(args: argparse.Namespace, lines: list[str]) -> dict:
    # the same data and model as gems_results.py (its seed-0 checkpoint when that benchmark has run)
    prepared, _ = demo_dataset(args.gems_work, log=print, **GEMS_DATA)
    ckpt = args.gems_work / "ckpt" / "GEMs (recent + mid + lifecycle)" / "0" / "best.ckpt"
    if not ckpt.exists():
        run_gems(prepared, ["recent", "mid", "life"], 0, args.gems_epochs, ckpt.parent)
    module = GEMsModule.load_from_checkpoint(ckpt, weights_only=False).eval()  # our own file, just written
    dm = data_module(prepared, 0)
    dm.setup()
    val = [b for _, b in zip(range(CALIBRATION_BATCHES), dm.val_dataloader())]
    test = list(dm.test_dataloader())

    def calibrate(m):
        return lambda: [m.recommend(b, TEST_BEAM) for b in val]

    models, stats = variants(module, calibrate)
    base_items, targets = gems_outputs(module, test)
    cols = [f"recall@{k}" for k in TEST_KS] + ["ndcg@10"]
    lines += ["## GEMs: constrained beam search, beam 500", "",
              f"{len(targets):,} test samples; quantized linears in the report below.", "",
              "| variant | " + " | ".join(cols) + " | top-10 overlap | top-1 changed |",
              "| :-- |" + " --: |" * (len(cols) + 2)]
    base = None
    for name, (m, _) in models.items():
        items = base_items if name == "fp32" else gems_outputs(m, test)[0]
        hit = items == targets[:, None]
        rank = torch.where(hit.any(1), hit.float().argmax(1), torch.full_like(targets, items.shape[1]))
        metrics = {k: float(v.float().mean()) for k, v in metrics_from_rank(rank, TEST_KS).items()}
        overlap = statistics.mean(len(set(a[:10].tolist()) & set(b[:10].tolist())) / 10
                                  for a, b in zip(base_items, items))
        changed = float((items[:, 0] != base_items[:, 0]).float().mean())
        base = base or metrics
        cells = [f"{metrics[c]:.4f}" + ("" if name == "fp32" else f" ({(metrics[c] / base[c] - 1) * 100:+.1f}%)")
                 for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {overlap:.3f} | {changed:.3f} |")
        print("GEMs", name, metrics, overlap, changed, flush=True)
    lines += ["", "<details><summary>GEMs PTQ report (dynamic)</summary>", "", models["fp8 dynamic"][1], "", "</details>", ""]
    return {"GEMs": stats}


def chain_section(args: argparse.Namespace, lines: list[str]) -> dict:
    dataset, users, items = CHAIN_DATA["Tmall-format"]
    prepared, _ = demo_dataset(args.out / "chains", dataset=dataset, users=users, items=items, log=print)
    dm = ChainDataModule(prepared, max_len=30, batch_size=256)
    dm.setup()
    spec = dm.spec
    val = [b for _, b in zip(range(CALIBRATION_BATCHES), dm.val_dataloader())]
    stats = {}
    lines += ["## A2Gen and PLE: per-action test AUC, Tmall-format", "",
              "| model | seed | variant | " + " | ".join(f"AUC {a}" for a in spec.actions) + " | max abs change |",
              "| :-- | --: | :-- |" + " --: |" * (len(spec.actions) + 1)]
    for name, cls, seeds in (("A2Gen (IAG)", A2GenModule, args.seeds), ("PLE", PLE, args.seeds[:1])):
        for seed in seeds:
            work = args.out / "chains" / "ckpt" / name / str(seed)
            if not (work / "best.ckpt").exists():
                train_and_test(cls, dm, seed, work, args.chain_epochs)
            module = cls.load_from_checkpoint(work / "best.ckpt", weights_only=False).eval()

            def calibrate(m):
                return lambda: [m.predict(b) for b in val]

            base = None
            models, model_stats = variants(module, calibrate)
            for variant, (m, _) in models.items():
                trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
                r = trainer.test(m, dm, verbose=False)[0]
                aucs = [r[f"test/auc/{a}"] for a in spec.actions]
                base = base or aucs
                change = max(abs(a - b) for a, b in zip(aucs, base))
                lines.append(f"| {name} | {seed} | {variant} | " + " | ".join(f"{a:.4f}" for a in aucs)
                             + f" | {change:.4f} |")
                print(name, seed, variant, aucs, flush=True)
            if seed == seeds[0]:
                stats[name] = model_stats
    lines.append("")
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--gems-epochs", type=int, default=4)
    parser.add_argument("--chain-epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "_work" / "fp8")
    parser.add_argument("--gems-work", type=Path, default=Path(__file__).parent / "_work" / "gems",
                        help="gems_results.py's folder: its data and seed-0 GEMs checkpoint are reused")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["# FP8 E4M3 PTQ: quality and statistics", ""]
    stats = gems_section(args, lines)
    stats |= chain_section(args, lines)
    lines += ["## Per-layer statistics (max over layers; activations = linear inputs over calibration batches)", "",
              "| model | layers | max weight var | max weight AbsMax | max weight AbsP99 | max act var | max act AbsMax "
              "| max act AbsP99 |", "| :-- |" + " --: |" * 7]
    for name, s in stats.items():
        row = summary_row(name, s)
        lines.append(f"| {name} | {row['layers']} | " + " | ".join(f"{row[k]:.3g}" for k in list(row)[2:]) + " |")
        write_csv(s, args.out / f"stats_{name.split()[0].lower()}.csv")
    plot_statistics(stats, args.out / "stats.png")
    text = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
