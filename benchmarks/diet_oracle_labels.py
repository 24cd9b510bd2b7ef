"""Can any soft labels fix a 1% memory? Train the zoo on a memory whose soft labels are the generator's
planted probabilities (issue #8 Sec. 3-4, a diagnostic for DIET's learnable soft labels).

DIET (arXiv 2603.24958; our reconstruction, see :mod:`recsys.distill.diet`) learns a soft label per
action and slot. No learned label can say more about a chain than the probability the synthetic stream
drew it from: :meth:`recsys.data.synth.kuairand.KuaiRandTruth.action_probabilities` of the chain's user,
item and start day (one exposure's probability; a chain of repeated exposures is likelier to hold the
action, so these slightly under-state multi-event chains). This script copies a memory built by
``diet_ranking.py`` (same ``--out``, ``--users``, ``--items``, ``--synth``), swaps its soft labels for
those probabilities (weights kept), trains the zoo on it with the toolkit's memory recipe (6 epochs at
batch 512, learning rates x2; the full-data runs' training seed) and prints each configuration's test AUC /
GAUC and the ranking's Kendall tau against the cached full-data runs. If the zoo's GAUC stays where hard
labels left it, the memory lacks inputs, not labels.

``--labels clamped`` instead sets them to the memory's labels clamped to [0.05, 0.95], which is where DIET
starts its slots (:meth:`recsys.distill.memory.Memory.from_samples`): a control for how much of a DIET memory's
behaviour is that label smoothing rather than its choice of chains and its meta-learning. ``--labels
observed`` sets them to the chains' observed 0/1 labels and ``--labels kept`` keeps the memory's own;
``--weights uniform`` sets every slot's weight to 1 (default: kept). With a DIET memory these two ablate its
learned labels and its learned weights one at a time. ``--labels teacher`` sets the labels to the predictions
of a teacher one can have without the generator: DIET's proxy (:mod:`recsys.distill.proxy`, its default size)
trained for two epochs on the whole training stream, which has seen the slots' own chains; ``--labels
prequential`` to those of the same proxy passed once over the stream's blocks in order, each chain predicted
before its block is trained on (out of sample, as a stream would label it). ``--epochs``, ``--batch-size``
and ``--lr-scale`` set the memory recipe (default: the toolkit's, 6 x 512 with learning rates x2; the commands
in BENCHMARKS.md from before its seventh DIET stop ran 6 x 256 at x1), ``--train-seed-offset`` the zoo's
training seed; the zoo's results are also written next to the memory
(``<memory>.<recipe>.json``), and ``--report-seeds 0 1 2`` ranks the zoo's mean over the training
seeds run, against full data's mean over the same ones (``diet_ranking.py``'s steadiest protocol).

    .venv/bin/python benchmarks/diet_oracle_labels.py --dataset-seed 0 --method random --users 3000 \\
        --synth rows_per_user_day=8 affinity_scale=8 like_bias=-5.5 late_volume=1 dormant_period=7 \\
        --out benchmarks/_work/diet8-planted-v3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import polars as pl
import torch
from diet_learnability import raw_ids
from diet_ranking import ROOT, TRAIN_OFFSETS, full_key, memory_key, parse_synth, recipe_key

from recsys.data.demo import demo_dataset
from recsys.data.synth import make_config
from recsys.data.synth.kuairand import kuairand_truth
from recsys.distill import proxy
from recsys.distill.diet import DIETConfig, fresh_proxy
from recsys.distill.memory import LABEL_CLAMP, MEMORY_FILE
from recsys.distill.stream import ChainStream
from recsys.distill.zoo import MEMORY_BATCH_SIZE, MEMORY_LR_SCALE, load_zoo, ranking_agreement, train_entry


def teacher_predictions(stream: ChainStream, mode: str, seed: int) -> torch.Tensor:
    """``[N, K]`` action probabilities for every training chain (stream order) from DIET's proxy at its default
    size, drawn from ``seed``: trained two epochs on the whole stream ("teacher"), or passed once over the
    blocks in order with each block predicted before it is trained on ("prequential")."""
    x = stream.inputs()
    gen = torch.Generator().manual_seed(1234 + seed)
    config = DIETConfig()
    params = fresh_proxy(stream, config, gen)
    if mode == "teacher":
        params, _ = proxy.train(params, x, epochs=config.init_epochs, generator=gen)
        with torch.no_grad():
            return torch.sigmoid(proxy.logits(params, x))
    predictions = torch.empty(x.labels.shape)
    for b in range(len(stream)):
        block = torch.as_tensor(stream.block(b))
        day = x.take(block)
        with torch.no_grad():
            predictions[block] = torch.sigmoid(proxy.logits(params, day))
        params, _ = proxy.train(params, day, epochs=1, generator=gen)
    return predictions


def relabelled_memory(data: Path, memory: Path, out: Path, truth, labels: str,  # noqa: ANN001
                      weights: str = "kept", seed: int = 0) -> pl.DataFrame:
    """``memory`` copied to ``out`` with every ``soft_<action>`` set to the planted probability (``labels``
    "planted"), clamped to [0.05, 0.95] ("clamped"), set to the chain's observed label ("observed"), to a
    proxy teacher's prediction ("teacher", "prequential": :func:`teacher_predictions`, from ``seed``) or kept
    ("kept"), and every weight set to 1 if ``weights`` is "uniform"; returns the label means before and after."""
    frame = pl.read_parquet(memory / MEMORY_FILE)
    soft = [c for c in frame.columns if c.startswith("soft_")]
    reweighted = frame.with_columns(weight=pl.lit(1.0, dtype=pl.Float32)) if weights == "uniform" else frame
    if labels == "kept":
        return _write(memory, out, frame, reweighted, soft)
    if labels == "clamped":
        relabelled = reweighted.with_columns(pl.col(c).clip(LABEL_CLAMP, 1 - LABEL_CLAMP) for c in soft)
        return _write(memory, out, frame, relabelled, soft)
    if labels in ("observed", "teacher", "prequential"):
        stream = ChainStream(str(data))
        position = np.empty(int(stream.rows.max()) + 1, dtype=np.int64)
        position[stream.rows] = np.arange(len(stream.rows))
        values = stream.inputs().labels if labels == "observed" else teacher_predictions(stream, labels, seed)
        values = values[position[frame["chain"].to_numpy()]].numpy()
        relabelled = reweighted.with_columns(**{c: pl.Series(values[:, stream.actions.index(c[5:])].astype(np.float32))
                                                for c in soft})
        return _write(memory, out, frame, relabelled, soft)
    probs = truth.action_probabilities(raw_ids(data, "user", frame["user"].to_numpy()),
                                       raw_ids(data, "item", frame["item"].to_numpy()),
                                       truth.day_of_time_ms(frame["start"].to_numpy()))
    relabelled = reweighted.with_columns(**{c: pl.Series(probs[f"is_{c[5:]}"].astype(np.float32)) for c in soft})
    return _write(memory, out, frame, relabelled, soft)


def _write(memory: Path, out: Path, frame: pl.DataFrame, relabelled: pl.DataFrame, soft: list[str]) -> pl.DataFrame:
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(memory, tmp)
    relabelled.write_parquet(tmp / MEMORY_FILE)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return frame.select(soft).mean().join(relabelled.select(soft).mean(), how="cross", suffix="_new")


def variant_name(method: str, budget: float, labels: str, weights: str) -> str:
    return f"{method}-{budget}-{labels}-labels" + ("-uniform-weights" if weights == "uniform" else "")


def report(args: argparse.Namespace) -> None:
    """Both sides averaged over training seeds (diet_ranking.py's steadiest protocol), for the relabelled
    memory and for the memory as it is, per dataset seed."""
    names = [e.name for e in load_zoo(args.zoo)]
    base = recipe_key(args.epochs, args.batch_size, args.lr_scale)
    variant = variant_name(args.method, args.budget, args.labels, args.weights)
    rows = {"as it is": [], variant: []}
    for seed in args.report_seeds:
        work = args.out / f"seed{seed}"
        cached = json.loads((work / "results.json").read_text())
        runs = {o: work / f"{variant}.{memory_key(base, o)}.json" for o in TRAIN_OFFSETS}
        offsets = [o for o in TRAIN_OFFSETS if runs[o].is_file() and full_key(o) in cached
                   and f"{args.method}@{args.budget}" in cached.get(memory_key(base, o), {})]
        if not offsets:
            raise SystemExit(f"seed {seed}: no training seed with the relabelled run, full data and the memory's run")
        full = [statistics.mean(cached[full_key(o)][n]["auc"] for o in offsets) for n in names]
        mine = [json.loads(runs[o].read_text()) for o in offsets]
        theirs = [cached[memory_key(base, o)][f"{args.method}@{args.budget}"]["entries"] for o in offsets]
        for label, results in (("as it is", theirs), (variant, mine)):
            rows[label].append((seed, offsets, ranking_agreement(full, [statistics.mean(r[n]["auc"] for r in results)
                                                                          for n in names])["tau"]))
    print(f"Kendall tau, both sides averaged over training seeds (+ offsets), {args.epochs} x {args.batch_size}, "
          f"learning rates x{args.lr_scale:g}:")
    for label, got in rows.items():
        taus = [t for _, _, t in got]
        print(f"| {label} | " + " / ".join(f"{t:.3f} (seed {s}, + {'/'.join(map(str, o))})" for s, o, t in got)
              + f" | mean {statistics.mean(taus):.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset-seed", type=int, default=0)
    p.add_argument("--method", default="random", help="which cached 1%% memory of the seed to relabel")
    p.add_argument("--budget", type=float, default=0.01)
    p.add_argument("--labels", default="planted",
                   choices=["planted", "clamped", "observed", "teacher", "prequential", "kept"])
    p.add_argument("--weights", choices=["kept", "uniform"], default="kept")
    p.add_argument("--epochs", type=int, default=6, help="epochs on the memory")
    p.add_argument("--batch-size", type=int, default=MEMORY_BATCH_SIZE, help="batch size on the memory")
    p.add_argument("--lr-scale", type=float, default=MEMORY_LR_SCALE,
                   help="multiplies the zoo's learning rates on the memory (the toolkit's recipe by default)")
    p.add_argument("--train-seed-offset", type=int, default=0,
                   help="train the zoo with seed + this (diet_ranking.py's --memory-seed-offset)")
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--items", type=int, default=3000)
    p.add_argument("--synth", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--zoo", type=Path, default=ROOT / "configs" / "distill" / "zoo_kuairand.yaml")
    p.add_argument("--out", type=Path, required=True, help="diet_ranking.py's --out (its caches are read)")
    p.add_argument("--report-seeds", type=int, nargs="+", default=None,
                   help="train nothing: for these dataset seeds, rank the zoo by its mean AUC over the training "
                        "seeds this relabelling was run with, against full data's mean over the same training "
                        "seeds, beside the memory as it is")
    args = p.parse_args()
    if args.report_seeds:
        return report(args)
    synth, seed = parse_synth(args.synth, p), args.dataset_seed
    data, _ = demo_dataset(args.out / "data", dataset="kuairand-pure", users=args.users, items=args.items,
                           seed=seed, log=lambda s: None, **synth)
    work = args.out / f"seed{seed}"
    cached = json.loads((work / "results.json").read_text())
    memory = work / f"{args.method}-{args.budget}"
    if not memory.is_dir():
        p.error(f"no memory {memory}: run diet_ranking.py with these settings first")
    truth = kuairand_truth(make_config("kuairand-pure", args.users, args.items, None, seed, **synth))
    out = work / variant_name(args.method, args.budget, args.labels, args.weights)
    means = relabelled_memory(Path(data), memory, out, truth, args.labels, args.weights, seed).row(0, named=True)
    print(f"label means (memory, {args.labels}):", means)
    zoo = load_zoo(args.zoo)
    names = [e.name for e in zoo]
    runs = {e.name: train_entry(e, out, epochs=args.epochs, batch_size=args.batch_size,
                                seed=seed + args.train_seed_offset, main_label=cached["main_label"],
                                lr_scale=args.lr_scale)
            for e in zoo}
    recipe = memory_key(recipe_key(args.epochs, args.batch_size, args.lr_scale), args.train_seed_offset)
    (work / f"{out.name}.{recipe}.json").write_text(json.dumps(runs, indent=1))  # for averaging over seeds
    hard = cached.get(recipe, {}).get(f"{args.method}@{args.budget}", {}).get("entries", {})
    new = {"planted": "planted probabilities", "clamped": "labels clamped to [0.05, 0.95]",
           "observed": "observed labels", "teacher": "a teacher's predictions",
           "prequential": "a prequential teacher's predictions", "kept": "its labels"}[args.labels]
    new += ", weights 1" if args.weights == "uniform" else ""
    print(f"\n{data.name}, {args.method} {args.budget:.0%} memory, {args.epochs} epochs at batch {args.batch_size}, "
          f"learning rates x{args.lr_scale:g} "
          f"(test AUC / GAUC of {cached['main_label']})\n")
    print(f"| config | full data | memory, its labels | memory, {new} |\n|---|---|---|---|")
    for n in names:
        f, h, o = cached["full"][n], hard.get(n), runs[n]
        print(f"| {n} | {f['auc']:.4f} / {f['gauc']:.4f} | "
              + (f"{h['auc']:.4f} / {h['gauc']:.4f}" if h else "") + f" | {o['auc']:.4f} / {o['gauc']:.4f} |")
    for k in map(full_key, TRAIN_OFFSETS):
        if k in cached:
            full = [cached[k][n]["auc"] for n in names]
            taus = {label: ranking_agreement(full, [r[n]["auc"] for n in names])["tau"]
                    for label, r in (("its labels", hard), (new, runs)) if r}
            print(f"Kendall tau against {k}: " + ", ".join(f"{label} {t:.3f}" for label, t in taus.items()))


if __name__ == "__main__":
    main()
