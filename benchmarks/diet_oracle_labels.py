"""Can any soft labels fix a 1% memory? Train the zoo on a memory whose soft labels are the generator's
planted probabilities (issue #8 Sec. 3-4, a diagnostic for DIET's learnable soft labels).

DIET (arXiv 2603.24958; our reconstruction, see :mod:`recsys.distill.diet`) learns a soft label per
action and slot. No learned label can say more about a chain than the probability the synthetic stream
drew it from: :meth:`recsys.data.synth.kuairand.KuaiRandTruth.action_probabilities` of the chain's user,
item and start day (one exposure's probability; a chain of repeated exposures is likelier to hold the
action, so these slightly under-state multi-event chains). This script copies a memory built by
``diet_ranking.py`` (same ``--out``, ``--users``, ``--items``, ``--synth``), swaps its soft labels for
those probabilities (weights kept), trains the zoo on it with the benchmark's memory recipe (6 epochs at
batch 256, the full-data runs' training seed) and prints each configuration's test AUC / GAUC and the
ranking's Kendall tau against the cached full-data runs. If the zoo's GAUC stays where hard labels left it,
the memory lacks inputs, not labels.

``--labels clamped`` instead sets them to the memory's labels clamped to [0.05, 0.95], which is where DIET
starts its slots (:meth:`recsys.distill.memory.Memory.from_samples`): a control for how much of a DIET memory's
behaviour is that label smoothing rather than its choice of chains and its meta-learning. ``--epochs`` sets
the memory recipe's epochs (default 6, the benchmark's).

    .venv/bin/python benchmarks/diet_oracle_labels.py --dataset-seed 0 --method random --users 3000 \\
        --synth rows_per_user_day=8 affinity_scale=8 like_bias=-5.5 late_volume=1 dormant_period=7 \\
        --out benchmarks/_work/diet8-planted-v3
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
from diet_learnability import raw_ids
from diet_ranking import ROOT, full_key, parse_synth

from recsys.data.demo import demo_dataset
from recsys.data.synth import make_config
from recsys.data.synth.kuairand import kuairand_truth
from recsys.distill.memory import LABEL_CLAMP, MEMORY_FILE
from recsys.distill.zoo import load_zoo, ranking_agreement, train_entry


def relabelled_memory(data: Path, memory: Path, out: Path, truth, labels: str) -> pl.DataFrame:  # noqa: ANN001
    """``memory`` copied to ``out`` with every ``soft_<action>`` set to the planted probability (``labels``
    "planted") or clamped to [0.05, 0.95] ("clamped"); returns the label means before and after."""
    frame = pl.read_parquet(memory / MEMORY_FILE)
    soft = [c for c in frame.columns if c.startswith("soft_")]
    if labels == "clamped":
        relabelled = frame.with_columns(pl.col(c).clip(LABEL_CLAMP, 1 - LABEL_CLAMP) for c in soft)
        return _write(memory, out, frame, relabelled, soft)
    probs = truth.action_probabilities(raw_ids(data, "user", frame["user"].to_numpy()),
                                       raw_ids(data, "item", frame["item"].to_numpy()),
                                       truth.day_of_time_ms(frame["start"].to_numpy()))
    relabelled = frame.with_columns(**{c: pl.Series(probs[f"is_{c[5:]}"].astype(np.float32)) for c in soft})
    return _write(memory, out, frame, relabelled, soft)


def _write(memory: Path, out: Path, frame: pl.DataFrame, relabelled: pl.DataFrame, soft: list[str]) -> pl.DataFrame:
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(memory, tmp)
    relabelled.write_parquet(tmp / MEMORY_FILE)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return frame.select(soft).mean().join(relabelled.select(soft).mean(), how="cross", suffix="_new")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset-seed", type=int, default=0)
    p.add_argument("--method", default="random", help="which cached 1%% memory of the seed to relabel")
    p.add_argument("--budget", type=float, default=0.01)
    p.add_argument("--labels", choices=["planted", "clamped"], default="planted")
    p.add_argument("--epochs", type=int, default=6, help="epochs on the memory (batch 256)")
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--items", type=int, default=3000)
    p.add_argument("--synth", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--zoo", type=Path, default=ROOT / "configs" / "distill" / "zoo_kuairand.yaml")
    p.add_argument("--out", type=Path, required=True, help="diet_ranking.py's --out (its caches are read)")
    args = p.parse_args()
    synth, seed = parse_synth(args.synth, p), args.dataset_seed
    data, _ = demo_dataset(args.out / "data", dataset="kuairand-pure", users=args.users, items=args.items,
                           seed=seed, log=lambda s: None, **synth)
    work = args.out / f"seed{seed}"
    cached = json.loads((work / "results.json").read_text())
    memory = work / f"{args.method}-{args.budget}"
    if not memory.is_dir():
        p.error(f"no memory {memory}: run diet_ranking.py with these settings first")
    truth = kuairand_truth(make_config("kuairand-pure", args.users, args.items, None, seed, **synth))
    out = work / f"{args.method}-{args.budget}-{args.labels}-labels"
    means = relabelled_memory(Path(data), memory, out, truth, args.labels).row(0, named=True)
    print(f"label means (memory, {args.labels}):", means)
    zoo = load_zoo(args.zoo)
    names = [e.name for e in zoo]
    runs = {e.name: train_entry(e, out, epochs=args.epochs, batch_size=256, seed=seed, main_label=cached["main_label"])
            for e in zoo}
    hard = cached.get(f"memories_e{args.epochs}_b256", {}).get(f"{args.method}@{args.budget}", {}).get("entries", {})
    new = {"planted": "planted probabilities", "clamped": "labels clamped to [0.05, 0.95]"}[args.labels]
    print(f"\n{data.name}, {args.method} {args.budget:.0%} memory, {args.epochs} epochs at batch 256 "
          f"(test AUC / GAUC of {cached['main_label']})\n")
    print(f"| config | full data | memory, its labels | memory, {new} |\n|---|---|---|---|")
    for n in names:
        f, h, o = cached["full"][n], hard.get(n), runs[n]
        print(f"| {n} | {f['auc']:.4f} / {f['gauc']:.4f} | "
              + (f"{h['auc']:.4f} / {h['gauc']:.4f}" if h else "") + f" | {o['auc']:.4f} / {o['gauc']:.4f} |")
    for k in (full_key(0), full_key(100)):
        if k in cached:
            full = [cached[k][n]["auc"] for n in names]
            taus = {label: ranking_agreement(full, [r[n]["auc"] for n in names])["tau"]
                    for label, r in (("its labels", hard), (new, runs)) if r}
            print(f"Kendall tau against {k}: " + ", ".join(f"{label} {t:.3f}" for label, t in taus.items()))


if __name__ == "__main__":
    main()
