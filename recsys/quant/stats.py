"""Per-layer weight and activation statistics: are a model's numbers "controlled" enough for FP8?

The OneRec-V2 FP8 study (arXiv 2603.11486; ``../shared/PAPERS.md`` §6.2) compares the variance, AbsMax and
AbsP99 of weights and activations layer by layer: traditional rankers reach weight variance ~1e7 and
AbsMax > 1000, the generative model stays LLM-like (variance < 0.1). This module measures the same on our
models over calibration batches.

* **weights**: every parameter with >= 2 dims (linear weights, embedding tables, other matrices), exact;
* **activations**: the input of every linear layer, over all calibration calls: variance and AbsMax exact
  (running sums), AbsP99 estimated from a uniform random sample of at most ``sample`` values per call.

>>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
>>> stats = collect_statistics(model, lambda: model(torch.randn(32, 8)))
>>> [(s.name, s.kind) for s in stats]
[('0', 'linear'), ('2', 'linear')]
>>> stats[1].act_absmax >= stats[1].act_p99 > 0      # ReLU outputs feed layer 2
True
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recsys.quant.fp8 import Fp8Linear

_QUANTILE_MAX = 16_000_000  # torch.quantile's input limit


@dataclass
class LayerStats:
    name: str
    kind: str  # "linear" (weight + input activations) or "param" (a weight matrix or table only)
    numel: int
    weight_var: float
    weight_absmax: float
    weight_p99: float
    act_var: float = math.nan
    act_absmax: float = math.nan
    act_p99: float = math.nan
    act_values: int = 0  # activation values seen


def _abs_p99(values: torch.Tensor, generator: torch.Generator) -> float:
    flat = values.detach().abs().float().flatten()
    if flat.numel() > _QUANTILE_MAX:
        flat = flat[torch.randint(flat.numel(), (_QUANTILE_MAX,), generator=generator)]
    return float(torch.quantile(flat, 0.99)) if flat.numel() else math.nan


class _ActivationMeter:
    """Running sum, sum of squares, count and |max| of a linear's inputs, plus a sample of |x|."""

    def __init__(self, sample: int, generator: torch.Generator) -> None:
        self.sum = self.sumsq = self.absmax = 0.0
        self.count = 0
        self.samples: list[torch.Tensor] = []
        self.sample, self.generator = sample, generator

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        x = inputs[0].detach().float().flatten()
        if x.numel() == 0:
            return
        self.sum += float(x.sum())
        self.sumsq += float((x * x).sum())
        self.count += x.numel()
        self.absmax = max(self.absmax, float(x.abs().max()))
        if x.numel() > self.sample:
            x = x[torch.randint(x.numel(), (self.sample,), generator=self.generator)]
        self.samples.append(x.abs().cpu())

    def result(self) -> tuple[float, float, float]:
        if not self.count:
            return math.nan, math.nan, math.nan
        mean = self.sum / self.count
        var = max(self.sumsq / self.count - mean * mean, 0.0)
        return var, self.absmax, _abs_p99(torch.cat(self.samples), self.generator)


@torch.no_grad()
def collect_statistics(model: nn.Module, run: Callable[[], Any], *, sample: int = 65_536,
                       seed: int = 0) -> list[LayerStats]:
    """Statistics of ``model``'s weights and of its linears' inputs while ``run()`` feeds it calibration
    batches (e.g. ``lambda: [module.predict(b) for b in batches]``). Hooks are removed afterwards."""
    generator = torch.Generator().manual_seed(seed)
    meters: dict[str, _ActivationMeter] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, Fp8Linear)):
            meters[name] = _ActivationMeter(sample, generator)
            handles.append(module.register_forward_pre_hook(meters[name]))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    out = []
    seen = set()
    for name, meter in meters.items():
        module = model.get_submodule(name)
        w = module.dequantized_weight() if hasattr(module, "dequantized_weight") else module.weight
        seen.add(f"{name}.weight")
        out.append(LayerStats(name, "linear", w.numel(), float(w.float().var()), float(w.abs().max()),
                              _abs_p99(w, generator), *meter.result(), meter.count))
    for name, p in model.named_parameters():
        if p.dim() >= 2 and name not in seen:
            out.append(LayerStats(name, "param", p.numel(), float(p.float().var()), float(p.abs().max()),
                                  _abs_p99(p, generator)))
    return out


def write_csv(stats: list[LayerStats], path: str | Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[x.name for x in fields(LayerStats)])
        writer.writeheader()
        writer.writerows(asdict(s) for s in stats)


def summary_row(model: str, stats: list[LayerStats]) -> dict[str, float | str]:
    """Max over layers of each statistic (what the paper's comparison turns on), and median of the variances."""
    linear = [s for s in stats if s.kind == "linear" and s.act_values]

    def top(attr: str, rows: list[LayerStats]) -> float:
        vals = [getattr(s, attr) for s in rows if not math.isnan(getattr(s, attr))]
        return max(vals) if vals else math.nan

    return {"model": model, "layers": len(stats),
            "max weight var": top("weight_var", stats), "max weight absmax": top("weight_absmax", stats),
            "max weight p99": top("weight_p99", stats), "max act var": top("act_var", linear),
            "max act absmax": top("act_absmax", linear), "max act p99": top("act_p99", linear)}


def plot_statistics(models: dict[str, list[LayerStats]], path: str | Path) -> None:
    """One PNG: per statistic a panel, per model a strip of its layers (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("weight_var", "weight variance"), ("weight_absmax", "weight AbsMax"), ("weight_p99", "weight AbsP99"),
              ("act_var", "activation variance"), ("act_absmax", "activation AbsMax"), ("act_p99", "activation AbsP99")]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for ax, (attr, title) in zip(axes.flat, panels):
        for i, (model, stats) in enumerate(models.items()):
            vals = [getattr(s, attr) for s in stats if not math.isnan(getattr(s, attr)) and getattr(s, attr) > 0]
            jitter = torch.linspace(-0.25, 0.25, max(len(vals), 1)).tolist()[: len(vals)]
            ax.scatter([i + j for j in jitter], vals, s=10, alpha=0.7)
        ax.set_yscale("log")
        ax.set_xticks(range(len(models)), list(models), rotation=15)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Per-layer statistics over calibration batches (one dot per layer)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
