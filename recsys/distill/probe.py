"""The layer probe of MARC (arXiv 2604.18146; ``../shared/PAPERS.md`` §5.3 step 1): does a middle layer of
the text encoder make better recommender features than its final layer (the Mid-layer Representation
Advantage, MRA)?

For every cached layer ``l`` and width ``d``, the item and user representations are compressed two ways
and fed to one CTR model of the toolkit (:mod:`recsys.models.pretrained` reads them as features next to the
id embeddings), trained from scratch on the training split, and scored on the test split (AUC and LogLoss
of the main action). The default CTR model is DeepFM, whose FM term crosses a vector with the user's
embedding: MMoE, which concatenates it, could not use even a planted-truth item feature in our runs
(BENCHMARKS.md, "MARC").

* ``pca``: the top-``d`` principal components (:func:`recsys.distill.compress.pca`), fixed;
* ``linear``: the full layer with a learned linear map to ``d`` trained with the CTR model.

A run without text features is the reference. :func:`plot_probe` draws AUC against layer, one line per
(method, d).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from recsys.distill.compress import pca
from recsys.distill.marc import save_codes
from recsys.distill.zoo import ZooEntry, train_entry

log = logging.getLogger(__name__)


def train_ctr(data: str | Path, vectors: Path | None, *, model: str = "DeepFM", init_args: dict | None = None,
              bottleneck: int | None = None, epochs: int = 2, batch_size: int = 512, seed: int = 0,
              main_label: str = "like", side_features: list[str] | None = None) -> dict[str, float]:
    """Test metrics of one CTR model trained on ``data`` with the ``vectors`` file as features (``None``: no
    vectors; ``side_features``: the dataset's side fields it reads, ``None`` all, ``[]`` ids only)."""
    args = dict(init_args or {})
    if vectors is not None:
        args |= {"pretrained": str(vectors), "pretrained_bottleneck": bottleneck}
    return train_entry(ZooEntry(name=model, model=model, init_args=args), data, epochs=epochs,
                       batch_size=batch_size, seed=seed, main_label=main_label, side_features=side_features)


def layer_probe(data: str | Path, layers: dict[int, tuple[torch.Tensor, torch.Tensor]], work: Path, *,
                dims: Sequence[int] = (16, 32, 64), methods: Sequence[str] = ("pca", "linear"),
                seeds: Sequence[int] = (0,), model: str = "DeepFM", init_args: dict | None = None,
                epochs: int = 2, batch_size: int = 512, main_label: str = "like",
                side_features: list[str] | None = None, progress: Callable[[str], None] = print) -> list[dict]:
    """Rows ``{layer, method, d, seed, auc, logloss}`` (``layer = -1, method = "none"``: no text features).

    ``layers`` maps a layer index (0 = the embedding output) to ``(item_h [num_items, H], user_h [num_users,
    H])`` aligned with the prepared dataset's vocabularies; ``work`` holds the vectors files."""
    unknown = set(methods) - {"pca", "linear"}
    if unknown:
        raise ValueError(f"unknown probe methods {sorted(unknown)}: expected pca, linear")
    work = Path(work)
    rows = []

    def run(layer: int, method: str, d: int, vectors: Path | None, bottleneck: int | None) -> None:
        for seed in seeds:
            m = train_ctr(data, vectors, model=model, init_args=init_args, bottleneck=bottleneck, epochs=epochs,
                          batch_size=batch_size, seed=seed, main_label=main_label, side_features=side_features)
            rows.append({"layer": layer, "method": method, "d": d, "seed": seed, "auc": m["auc"],
                         "logloss": m["logloss"]})
            progress(f"layer {layer:>3} {method:>6} d={d:<4} seed {seed}: auc {m['auc']:.4f} "
                     f"logloss {m['logloss']:.4f}")

    run(-1, "none", 0, None, None)
    for layer, (item_h, user_h) in layers.items():
        if "linear" in methods:
            full = work / f"layer{layer}-full.safetensors"
            if not full.exists():
                save_codes({"item": item_h, "user": user_h}, full, {"layer": layer, "method": "full"})
            for d in dims:
                run(layer, "linear", d, full, d)
        if "pca" in methods:
            for d in dims:
                path = work / f"layer{layer}-pca{d}.safetensors"
                if not path.exists():
                    save_codes({"item": pca(item_h, d), "user": pca(user_h, d)}, path,
                               {"layer": layer, "method": "pca", "d": d})
                run(layer, "pca", d, path, None)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds per (layer, method, d)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["layer"], r["method"], r["d"]), []).append(r)
    out = []
    for (layer, method, d), rs in sorted(groups.items()):
        auc = torch.tensor([r["auc"] for r in rs], dtype=torch.float64)
        ll = torch.tensor([r["logloss"] for r in rs], dtype=torch.float64)
        out.append({"layer": layer, "method": method, "d": d, "seeds": len(rs), "auc": float(auc.mean()),
                    "auc_std": float(auc.std()) if len(rs) > 1 else 0.0, "logloss": float(ll.mean())})
    return out


def format_probe(summary: list[dict]) -> str:
    lines = ["| layer | compression | d | seeds | AUC | LogLoss |", "| --: | :-- | --: | --: | --: | --: |"]
    for r in summary:
        layer = "-" if r["layer"] < 0 else str(r["layer"])
        lines.append(f"| {layer} | {r['method']} | {r['d'] or '-'} | {r['seeds']} | {r['auc']:.4f} ± {r['auc_std']:.4f} "
                     f"| {r['logloss']:.4f} |")
    return "\n".join(lines)


def plot_probe(summary: list[dict], path: Path, title: str) -> None:
    """AUC against layer, one line per (method, d); the no-text reference as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (method, d) in sorted({(r["method"], r["d"]) for r in summary if r["layer"] >= 0}):
        pts = sorted((r["layer"], r["auc"]) for r in summary if (r["method"], r["d"]) == (method, d))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{method} d={d}")
    for r in summary:
        if r["layer"] < 0:
            ax.axhline(r["auc"], linestyle="--", color="gray", label="no text features")
    ax.set_xlabel("encoder layer (0 = embeddings)")
    ax.set_ylabel("test AUC")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
