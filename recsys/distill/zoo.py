"""The architecture zoo: train each configuration from scratch on full data and on memories, and compare
the rankings (issue #8 Sec. 3). This is what a distilled memory is for: choosing an architecture without
training every candidate on the whole stream.

A zoo file (YAML) names configurations of the toolkit's chain-ranking models::

    recipe: {lr: 0.003, muon_lr: 0.005}           # init args every entry gets (an entry's own win)
    entries:
      - {name: din-d16, model: DIN, init_args: {dim: 16}}
      - {name: a2gen-d32, model: A2Gen, init_args: {dim: 32}}

Every configuration trains a fixed number of epochs through Lightning (no early stopping, so the cost is
what the data asks for) and is scored on the source's test split: the main label's AUC, GAUC and LogLoss.
Rankings are compared by Kendall tau-b and Spearman rho (torchmetrics) and top-1 agreement, optionally
with both sides averaged over several training seeds, beside full data's agreement with itself across those
seeds (how well one run's ranking reproduces another's), how a memory orders the pairs every full-data run orders
alike (:func:`resolved_pair_agreement`), and each memory's coverage of the test split (the
shares of test chains whose user / item a slot holds, :func:`~recsys.distill.memory.memory_coverage`).
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from torchmetrics.functional.regression import kendall_rank_corrcoef, spearman_corrcoef

from recsys.data.chain_ranking import ChainDataModule
from recsys.data.errors import DataError


#: The memory recipe's batch size and learning-rate scale (6 epochs): batch 512 with both learning rates
#: doubled (the linear scaling rule from batch 256 at 1x). Half the optimizer steps of 6 x 256 at 1x, so
#: every configuration trains >= 30x cheaper than on full data (the per-step cost does not shrink with the
#: batch), and on BENCHMARKS.md's 600-user stream it ranks the zoo as well as 6 x 256 does; 6 x 512 at 1x
#: leaves the models near their initialization and ranks them by training seed (BENCHMARKS.md, "DIET").
MEMORY_BATCH_SIZE = 512
MEMORY_LR_SCALE = 2.0


def registered_models() -> dict[str, type]:
    from recsys.models.a2gen import A2GenModule
    from recsys.models.deepfm import DeepFM
    from recsys.models.din import DIN
    from recsys.models.mmoe import MMoE
    from recsys.models.ple import PLE

    return {"A2Gen": A2GenModule, "MMoE": MMoE, "PLE": PLE, "DIN": DIN, "DeepFM": DeepFM}


@dataclass
class ZooEntry:
    name: str
    model: str
    init_args: dict[str, Any] = field(default_factory=dict)


def load_zoo(path: str | Path) -> list[ZooEntry]:
    """Entries of a zoo file, checked: names unique, every model registered, recipe merged in."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "zoo file not found")
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list) or not doc["entries"]:
        raise DataError(path, "expected a mapping with a non-empty 'entries' list")
    recipe = doc.get("recipe") or {}
    models = registered_models()
    entries, seen = [], set()
    for i, raw in enumerate(doc["entries"]):
        if not isinstance(raw, dict) or "name" not in raw or "model" not in raw:
            raise DataError(path, f"entry {i}: expected name, model and optional init_args, got {raw!r}")
        if raw["model"] not in models:
            raise DataError(path, f"entry {i} ({raw['name']}): model {raw['model']!r} is not registered; "
                                  f"registered: {sorted(models)}")
        if raw["name"] in seen:
            raise DataError(path, f"entry {i}: duplicate name {raw['name']!r}")
        seen.add(raw["name"])
        entries.append(ZooEntry(raw["name"], raw["model"], {**recipe, **(raw.get("init_args") or {})}))
    return entries


def scaled_learning_rates(entry: ZooEntry, scale: float) -> dict[str, Any]:
    """The entry's init args with both learning rates (``lr``, ``muon_lr``; the model's defaults where the
    entry sets none) multiplied by ``scale``."""
    if scale == 1.0:
        return dict(entry.init_args)
    defaults = inspect.signature(registered_models()[entry.model]).parameters
    return {**entry.init_args, **{k: scale * entry.init_args.get(k, defaults[k].default) for k in ("lr", "muon_lr")}}


def train_entry(entry: ZooEntry, data: str | Path, *, epochs: int, batch_size: int, seed: int,
                main_label: str, side_features: list[str] | None = None, lr_scale: float = 1.0,
                prior_init: bool = False, max_steps: int = -1) -> dict[str, float]:
    """Train one configuration from scratch on ``data`` (a prepared dataset or a memory); its test
    metrics for the main label and its training cost (``side_features``: see
    :class:`~recsys.data.chain_ranking.ChainDataModule`; ``lr_scale`` multiplies the entry's learning
    rates, see :func:`scaled_learning_rates`; ``prior_init`` starts the action logits at the training
    split's label rates where the model can, see
    :meth:`~recsys.models.mmoe.ChainHeadsModule.init_action_prior`: A2Gen, a softmax over action tokens,
    starts as it does; ``max_steps`` > 0 stops after that many optimizer steps if the epochs have not ended
    first: a run of a memory's length on full data, the yardstick of ``benchmarks/diet_ranking.py
    --full-steps``)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one line per run is ours to print
    L.seed_everything(seed, verbose=False)
    dm = ChainDataModule(str(data), batch_size=batch_size, seed=seed, side_features=side_features)
    model = registered_models()[entry.model](dm.feature_cardinalities, dm.spec_dict,
                                             **scaled_learning_rates(entry, lr_scale))
    if prior_init and hasattr(model, "init_action_prior"):
        model.init_action_prior(dm.label_rates())
    trainer = L.Trainer(max_epochs=epochs, max_steps=max_steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                        num_sanity_val_steps=0)
    started = time.perf_counter()
    trainer.fit(model, dm)
    seconds = time.perf_counter() - started
    result = trainer.test(model, dm, verbose=False)[0]
    samples = epochs * len(dm.samples("train"))
    if max_steps > 0:  # a run cut short by its steps processed that many full batches
        samples = min(samples, trainer.global_step * batch_size)
    return {"auc": result[f"test/auc/{main_label}"], "gauc": result[f"test/gauc/{main_label}"],
            "logloss": result[f"test/logloss/{main_label}"], "train_seconds": seconds,
            "train_samples": float(samples)}


def ranking_agreement(full: list[float], other: list[float]) -> dict[str, float]:
    """Kendall tau-b, Spearman rho and top-1 agreement of two score lists over the same configurations."""
    a, b = torch.tensor(full, dtype=torch.float64), torch.tensor(other, dtype=torch.float64)
    return {"tau": float(kendall_rank_corrcoef(b, a)), "rho": float(spearman_corrcoef(b, a)),
            "top1": float(int(a.argmax()) == int(b.argmax()))}


def pair_agreement(full: list[float], other: list[float], models: list[str]) -> dict[str, float]:
    """The share of configuration pairs that ``other`` orders as ``full`` does, split by whether the two
    configurations are of different models (``across``: which architecture) or of the same one (``within``:
    which size or learning rate of it); pairs that full data ties are left out. Kendall tau mixes the two, and a
    memory can get one right and the other wrong (BENCHMARKS.md, "DIET", fifteenth stop).

    E.g. DIN and PLE at two sizes each, full ``[0.80, 0.82, 0.78, 0.79]``, memory ``[0.81, 0.80, 0.76, 0.77]``
    with ``models ["DIN", "DIN", "PLE", "PLE"]``: every DIN-PLE pair agrees (``across`` 1.0, 4 pairs), the
    larger DIN falls behind the smaller (``within`` 0.5, 2 pairs).
    """
    if not len(full) == len(other) == len(models):
        raise ValueError(f"pair_agreement: {len(full)} full scores, {len(other)} others, {len(models)} models")
    counts = {"across": [0, 0], "within": [0, 0]}
    for i, j in itertools.combinations(range(len(full)), 2):
        if full[i] == full[j]:
            continue
        c = counts["within" if models[i] == models[j] else "across"]
        c[0] += (full[i] - full[j]) * (other[i] - other[j]) > 0
        c[1] += 1
    return {**{k: (a / n if n else float("nan")) for k, (a, n) in counts.items()},
            **{f"{k}_pairs": float(n) for k, (_, n) in counts.items()}}


def resolved_pair_agreement(full_runs: Sequence[Sequence[float]], other: Sequence[float]) -> dict[str, float]:
    """How ``other`` orders the configuration pairs that full data *resolves*: the pairs every full-data run
    (one score list per training seed) orders the same way. A diagnostic beside Kendall tau, not a
    replacement: tau counts every pair, and a pair full data itself orders differently from one training seed
    to the next (on BENCHMARKS.md's dense-layer zoo, an MMoE and a PLE of one width, 0.001-0.004 AUC apart) costs
    a memory as much as a pair it gets truly wrong. Two configurations that tie on full data pass as resolved
    with probability ``2 ** (1 - k)`` for ``k`` runs, so the split wants three or more runs.

    Returns ``resolved`` (the share of resolved pairs ``other`` orders as full data; a tie in ``other``
    counts against it), ``resolved_tau`` (concordant minus discordant over resolved pairs) and
    ``resolved_pairs``. E.g. runs ``[[0.80, 0.82, 0.70], [0.81, 0.80, 0.71]]`` resolve the pairs (0, 2) and
    (1, 2) but not (0, 1); ``other`` ``[0.75, 0.74, 0.76]`` gets both resolved pairs wrong: ``resolved`` 0.0,
    ``resolved_tau`` -1.0, ``resolved_pairs`` 2.0.
    """
    runs = [list(map(float, r)) for r in full_runs]
    if len(runs) < 2:
        raise ValueError(f"resolved_pair_agreement needs at least two full-data runs, got {len(runs)}")
    if any(len(r) != len(other) for r in runs):
        raise ValueError(f"resolved_pair_agreement: runs of {sorted({len(r) for r in runs})} scores, "
                         f"{len(other)} others")
    agree = resolved = 0
    for i, j in itertools.combinations(range(len(other)), 2):
        signs = {(r[i] > r[j]) - (r[i] < r[j]) for r in runs}
        if signs not in ({1}, {-1}):
            continue
        resolved += 1
        agree += signs.pop() * (other[i] - other[j]) > 0
    if not resolved:
        return {"resolved": float("nan"), "resolved_tau": float("nan"), "resolved_pairs": 0.0}
    return {"resolved": agree / resolved, "resolved_tau": (2 * agree - resolved) / resolved,
            "resolved_pairs": float(resolved)}


def memory_agreement(full: dict[str, dict[str, float]], memory: dict[str, dict[str, float]],
                     names: list[str], models: list[str] | None = None) -> dict[str, float]:
    """The ranking agreement of a memory's per-entry metrics with full data's over ``names``, and the cost
    ratios (full data's training samples and seconds over the memory's, summed over the zoo); with ``models``
    (each name's model), also :func:`pair_agreement` across and within models."""
    full_auc, memory_auc = [full[n]["auc"] for n in names], [memory[n]["auc"] for n in names]
    out = ranking_agreement(full_auc, memory_auc)
    if models is not None:
        out.update(pair_agreement(full_auc, memory_auc, models))
    for ratio, metric in (("samples_ratio", "train_samples"), ("seconds_ratio", "train_seconds")):
        out[ratio] = sum(full[n][metric] for n in names) / sum(memory[n][metric] for n in names)
    return out


def _mean_runs(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each entry's metrics averaged over runs (one dict ``name -> metrics`` per training seed)."""
    return {name: {k: sum(r[name][k] for r in runs) / len(runs) for k in runs[0][name]} for name in runs[0]}


def full_self_agreement(runs: list[dict[str, dict[str, float]]], names: list[str]) -> dict[str, float]:
    """Kendall tau of one full-data run's ranking against another's, over every pair of training seeds: the
    yardstick for a memory's tau with one training seed (BENCHMARKS.md, "DIET": 0.50-1.00 between two seeds
    on its 600-user stream). Averaging both sides over k seeds raises it (there, to about 0.92 with three a
    side); measuring that takes 2k full-data runs, which ``benchmarks/diet_ranking.py`` reports.
    E.g. three runs give three pairs; ``tau_mean`` is their mean, ``tau_min``/``tau_max`` the extremes."""
    taus = [ranking_agreement([a[n]["auc"] for n in names], [b[n]["auc"] for n in names])["tau"]
            for i, a in enumerate(runs) for b in runs[i + 1:]]
    return {"pairs": len(taus), "tau_mean": sum(taus) / len(taus), "tau_min": min(taus), "tau_max": max(taus)}


def compare(data: str | Path, memories: list[Path], zoo: list[ZooEntry], *, full_epochs: int = 2,
            memory_epochs: int = 6, batch_size: int = 512, memory_batch_size: int = MEMORY_BATCH_SIZE,
            seeds: Sequence[int] = (0,), memory_lr_scale: float = MEMORY_LR_SCALE, memory_prior_init: bool = False,
            full_results: dict[str, dict[str, float]] | None = None, log=print) -> dict[str, Any]:  # noqa: ANN001
    """Train every zoo entry on ``data`` (unless ``full_results`` are given) and on each memory, once per
    training seed of ``seeds``; return per-entry metrics averaged over the seeds and, per memory, the ranking
    agreement of those means with full data's means, and the cost ratios.

    One training seed ranks configurations that differ by little more than seed noise; averaging both sides
    over several seeds is the steadier protocol, and with two or more seeds ``full_self_agreement`` (full
    data's runs against one another) says how well one run's ranking reproduces another's, and each memory's
    :func:`resolved_pair_agreement` how it orders the pairs all of full data's runs agree on. ``full_results``
    (already averaged over the same seeds) skip the full-data runs. Per-seed runs are kept under ``full_runs``
    and each memory's ``runs``, keyed by seed. ``memory_prior_init``: the runs on memories start their action
    logits at the memory's label rates (:func:`train_entry`'s ``prior_init``).
    """
    from recsys.distill.memory import check_memory_of, memory_coverage
    from recsys.distill.stream import ChainStream

    if not seeds:
        raise ValueError("compare needs at least one training seed")
    stream = ChainStream(str(data))
    metas = {str(m): check_memory_of(m, stream) for m in memories}
    main = stream.main_label
    for meta in metas.values():
        main = meta.get("main_label", main)
    names = [e.name for e in zoo]

    def train_all(path: str | Path, tag: str, epochs: int, batch: int, lr_scale: float = 1.0,
                  prior_init: bool = False) -> dict[str, Any]:
        runs = {}
        for seed in seeds:
            results = runs[str(seed)] = {}
            for e in zoo:
                r = results[e.name] = train_entry(e, path, epochs=epochs, batch_size=batch, seed=seed,
                                                  main_label=main, lr_scale=lr_scale, prior_init=prior_init)
                log(f"{tag:<8} {e.name:<16} seed {seed:<4} auc {r['auc']:.4f}  {r['train_seconds']:.1f} s")
        return runs

    out: dict[str, Any] = {"main_label": main, "seeds": list(seeds), "memories": {}}
    if full_results is None:
        full_runs = train_all(data, "full", full_epochs, batch_size)
        full_results = _mean_runs(list(full_runs.values()))
        out["full_runs"] = full_runs
        if len(full_runs) > 1:
            out["full_self_agreement"] = full_self_agreement(list(full_runs.values()), names)
    out["full"] = full_results
    for mem in memories:
        runs = train_all(mem, Path(mem).name, memory_epochs, memory_batch_size, memory_lr_scale, memory_prior_init)
        per = _mean_runs(list(runs.values()))
        out["memories"][str(mem)] = {"meta": {k: metas[str(mem)][k] for k in ("method", "budget", "slots")},
                                    "entries": per, "runs": runs,
                                    **memory_agreement(full_results, per, names, [e.model for e in zoo]),
                                    "coverage": memory_coverage(Path(mem))}
        if len(out.get("full_runs", {})) > 1:
            out["memories"][str(mem)].update(resolved_pair_agreement(
                [[r[n]["auc"] for n in names] for r in out["full_runs"].values()], [per[n]["auc"] for n in names]))
    return out


def format_comparison(result: dict[str, Any]) -> str:
    """A markdown table: each configuration's test AUC on full data and on each memory, then agreement rows."""
    mems = list(result["memories"])
    head = ["config", "full", *(f"{result['memories'][m]['meta']['method']} {result['memories'][m]['meta']['budget']:.2%}"
                                for m in mems)]
    seeds = result.get("seeds", [0])
    averaged = f", mean over training seeds {seeds}" if len(seeds) > 1 else ""
    lines = [f"Test AUC of {result['main_label']}{averaged}:", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for name, full in result["full"].items():
        lines.append("| " + " | ".join([name, f"{full['auc']:.4f}",
                                        *(f"{result['memories'][m]['entries'][name]['auc']:.4f}" for m in mems)]) + " |")
    for key, fmt in (("tau", "{:.3f}"), ("rho", "{:.3f}"), ("top1", "{:.0f}"), ("across", "{:.3f}"),
                     ("within", "{:.3f}"), ("samples_ratio", "{:.1f}x"), ("seconds_ratio", "{:.1f}x")):
        label = {"across": "pairs as full, across models", "within": "pairs as full, within a model"}.get(key, key)
        values = [result["memories"][m][key] for m in mems]
        lines.append("| " + " | ".join([label, "", *("-" if math.isnan(v) else fmt.format(v) for v in values)]) + " |")
    if all("resolved" in result["memories"][m] for m in mems) and mems:
        n = int(result["memories"][mems[0]]["resolved_pairs"])
        values = [result["memories"][m]["resolved"] for m in mems]
        lines.append("| " + " | ".join([f"pairs as full, of the {n} every full-data run orders alike", "",
                                        *("-" if math.isnan(v) else f"{v:.3f}" for v in values)]) + " |")
    for key, label in (("users", "test users covered"), ("items", "test items covered")):
        lines.append("| " + " | ".join([label, "", *(f"{result['memories'][m]['coverage'][key]:.1%}" for m in mems)]) + " |")
    if "full_self_agreement" in result:
        a = result["full_self_agreement"]
        lines += ["", (f"Full data against itself (one training seed's run against another's, {a['pairs']} pairs): "
                       f"Kendall tau {a['tau_mean']:.3f} on the mean ({a['tau_min']:.3f} to {a['tau_max']:.3f}).")]
    return "\n".join(lines)
