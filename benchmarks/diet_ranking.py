"""DIET vs its baselines on what a memory is for: ranking an architecture zoo like full data does (issue #8
Sec. 3-4).

For each seed: a synthetic Tmall-format (or ``--dataset kuairand-pure``) release (planted user/topic action styles, so the models truly
differ), prepared; the zoo (``configs/distill/zoo_tmall.yaml``: 8 configurations of DIN, MMoE, PLE,
A2Gen) trained from scratch on the full training stream and on every memory (DIET and each baseline, at
each budget); test AUC of the main label (purchase); Kendall tau / Spearman rho / top-1 against the
full-data ranking; training cost (samples, wall seconds) and the cost of building each memory. A
reference: the same zoo on full data with another training seed, whose tau against the first shows how
stable the full-data ranking itself is; with ``--memory-seed-offset`` and ``--full-seed-offset`` (100, 200,
300) both sides are trained with further training seeds, and the report ranks each side's mean AUC over the
training seeds both have (the steadiest protocol, BENCHMARKS.md). Those tables also give how each memory orders
the configuration pairs every cached full-data run orders alike, and with ``--full-steps`` a row for the zoo trained
on full data for only as many optimizer steps as a 1% memory gets (what that many steps of the stream itself say).

    .venv/bin/python benchmarks/diet_ranking.py [--seeds 0 1 2] [--sweep-seeds 0]

Results are cached per seed under ``--out`` (rerunning skips finished parts; a zoo grown since, e.g.
``configs/distill/zoo_kuairand_deepfm.yaml`` over runs of ``zoo_kuairand.yaml``, trains only its new entries);
writes ``results.md`` there and ``benchmarks/figures/diet_tau_budget_<dataset>.png`` (not with ``--no-figure``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from recsys.data.demo import demo_dataset
from recsys.distill.baselines import select
from recsys.distill.diet import DIETConfig, run_diet
from recsys.distill.memory import memory_coverage, write_memory_dataset
from recsys.distill.stream import ChainStream
from recsys.distill.zoo import (MEMORY_BATCH_SIZE, MEMORY_LR_SCALE, compare, load_zoo, memory_agreement,
                                pair_agreement, ranking_agreement, resolved_pair_agreement, train_entry)

ROOT = Path(__file__).resolve().parents[1]
#: Training-seed offset of the reseeded full-data runs (the reference for how stable the full ranking is)
RESEED = 100
#: Training-seed offsets the averaged protocol uses, where both sides have them (``--full-seed-offset``,
#: ``--memory-seed-offset``)
TRAIN_OFFSETS = (0, RESEED, 200, 300, 400, 500)
#: Where a seed's zoo trained on full data for a 1% memory's number of steps is cached (``--full-steps``), and
#: its row in the report's tables averaged over training seeds; ``full_steps_key(k)`` for k times those steps.
FULL_STEPS = "full-steps@0.01"
METHODS = ("diet", "diet_users", "diet_capped", "diet_relaxed", "random", "reservoir", "herding", "kcenter", "influence")


def build_memory(method: str, data: Path, out: Path, budget: float, seed: int, block_days: int) -> float:
    """Build (unless present) and return the build seconds (cached next to the memory)."""
    stamp = out.parent / f"{out.name}.seconds"
    if out.is_dir() and stamp.is_file():
        return float(stamp.read_text())
    started = time.perf_counter()
    if method.startswith("diet"):  # diet_users: strata by user activity too (4 buckets); diet_capped: user_cap 2;
        # diet_relaxed: the soft one-hot option on every field of at most 32 ids
        config = DIETConfig(budget=budget, block_days=block_days, seed=seed,
                            activity_strata=4 if method == "diet_users" else 1,
                            user_cap=2.0 if method == "diet_capped" else 0.0,
                            relax_vocab=32 if method == "diet_relaxed" else 0)
        run_diet(data, out, config, log=lambda s: None)
    else:
        stream = ChainStream(str(data), block_days=block_days)
        write_memory_dataset(stream, select(stream, method, budget, seed), out,
                             {"method": method, "budget": budget, "main_label": stream.main_label, "seed": seed})
    seconds = time.perf_counter() - started
    stamp.write_text(f"{seconds}")
    return seconds


def full_key(offset: int) -> str:
    """Where a seed's full-data zoo trained with training seed + ``offset`` is cached."""
    return {0: "full", RESEED: "full_reseeded"}.get(offset, f"full_s{offset}")


def recipe_key(epochs: int, batch_size: int, lr_scale: float, prior_init: bool = False) -> str:
    """Where a memory-training recipe's results are cached (the first recipe, 6 epochs at batch 32 with the
    zoo's own learning rates, under "memories")."""
    base = "memories" if (epochs, batch_size) == (6, 32) else f"memories_e{epochs}_b{batch_size}"
    return base + (f"_lr{lr_scale:g}" if lr_scale != 1.0 else "") + ("_prior" if prior_init else "")


def full_steps_key(mult: int) -> str:
    """Where full data trained for ``mult`` times a 1% memory's steps is cached (``--full-steps``)."""
    return FULL_STEPS if mult == 1 else f"full-steps-x{mult}@0.01"


def memory_key(base: str, offset: int) -> str:
    """Where a memory recipe's (``base``) results with training seed + ``offset`` are cached."""
    return f"{base}_s{offset}" if offset else base


def _save(cache: Path, done: dict) -> None:
    """Write a seed's results, merged into what is on disk: runs with other recipes or seed offsets may share
    the file (each writes only its own keys); temp file, then rename."""
    disk = json.loads(cache.read_text()) if cache.is_file() else {}
    for key, value in done.items():
        disk[key] = {**disk[key], **value} if isinstance(value, dict) and isinstance(disk.get(key), dict) else value
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(disk, indent=1))
    tmp.replace(cache)


def run_seed(args: argparse.Namespace, seed: int, zoo: list) -> dict:
    work = args.out / f"seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "results.json"
    done = json.loads(cache.read_text()) if cache.is_file() else {}
    if args.report_only and "stream_chains" in done:
        return done  # the cache holds what the report reads: no dataset to generate or load
    data, _ = demo_dataset(args.out / "data", dataset=args.dataset, users=args.users, items=args.items, seed=seed,
                           log=lambda s: None, **args.synth)
    stream = ChainStream(str(data))
    done["stream_chains"] = stream.size
    done["main_label"] = stream.main_label
    budgets = args.budgets if seed in args.sweep_seeds else [0.01]
    kw = dict(full_epochs=args.full_epochs, memory_epochs=args.memory_epochs, batch_size=512,
              memory_batch_size=args.memory_batch_size, memory_lr_scale=args.memory_lr_scale,
              memory_prior_init=args.memory_prior_init, seeds=(seed,), log=print)
    if args.report_only:
        return done

    def train_full(entries: list, offset: int) -> dict:
        runs = {}
        for e in entries:
            r = runs[e.name] = train_entry(e, data, epochs=args.full_epochs, batch_size=512, seed=seed + offset,
                                           main_label=stream.main_label)
            print(f"full     {e.name:<16} seed {seed + offset:<4} auc {r['auc']:.4f}  {r['train_seconds']:.1f} s",
                  flush=True)
        return runs

    # a zoo grown since a run was cached (e.g. DeepFM added): its new entries are trained alone and merged in;
    # every full-data run of the seed that is cached gets them, so the averaged protocol stays complete
    for offset in TRAIN_OFFSETS:
        key = full_key(offset)
        missing = [e for e in zoo if e.name not in done.get(key, {})]
        if key in done and missing:
            done[key].update(train_full(missing, offset))
            _save(cache, done)
    if "full" not in done:
        done["full"] = train_full(zoo, 0)
        _save(cache, done)
    again = full_key(args.full_seed_offset)
    if seed in (args.sweep_seeds if args.reseed_seeds is None else args.reseed_seeds) and again not in done:
        done[again] = train_full(zoo, args.full_seed_offset)
        _save(cache, done)
    done.setdefault(args.mkey, {})
    for budget in budgets:
        for method in args.methods:
            key = f"{method}@{budget}"
            mem = work / f"{method}-{budget}"
            if key in done[args.mkey]:
                missing = [e for e in zoo if e.name not in done[args.mkey][key]["entries"]]
                if missing:
                    done[args.mkey][key] = extend_memory_result(done[args.mkey][key], done["full"], zoo, compare(
                        data, [mem], missing, full_results=done["full"],
                        **{**kw, "seeds": (seed + args.memory_seed_offset,)})["memories"][str(mem)])
                    _save(cache, done)
                continue
            build = build_memory(method, data, mem, budget, seed, args.block_days)
            result = compare(data, [mem], zoo, full_results=done["full"],
                             **{**kw, "seeds": (seed + args.memory_seed_offset,)})["memories"][str(mem)]
            result["build_seconds"] = build
            done[args.mkey][key] = result
            _save(cache, done)
            print(f"seed {seed} {key}: tau {result['tau']:.3f} rho {result['rho']:.3f} top1 {result['top1']:.0f} "
                  f"samples {result['samples_ratio']:.1f}x seconds {result['seconds_ratio']:.1f}x build {build:.1f} s",
                  flush=True)
    # the yardstick: full data trained for as many optimizer steps as a 1% memory gets at this recipe (or a multiple),
    # at its batch and learning rates, so fresh chains where a memory repeats its own (BENCHMARKS.md, "DIET")
    for mult in args.full_steps or ():
        steps = mult * args.memory_epochs * math.ceil(round(0.01 * stream.size) / args.memory_batch_size)
        entries = done[args.mkey].get(full_steps_key(mult), {}).get("entries", {})
        missing = [e for e in zoo if e.name not in entries]
        for e in missing:
            r = entries[e.name] = train_entry(e, data, epochs=mult, batch_size=args.memory_batch_size,
                                              seed=seed + args.memory_seed_offset, main_label=stream.main_label,
                                              lr_scale=args.memory_lr_scale, prior_init=args.memory_prior_init,
                                              max_steps=steps)
            print(f"{steps} steps {e.name:<16} seed {seed + args.memory_seed_offset:<4} auc {r['auc']:.4f}",
                  flush=True)
        if missing:
            done[args.mkey][full_steps_key(mult)] = {
                "meta": {"method": "full data", "steps": steps}, "entries": entries,
                **memory_agreement(done["full"], entries, [e.name for e in zoo])}
            _save(cache, done)
    return done


def extend_memory_result(cached: dict, full: dict, zoo: list, new: dict) -> dict:
    """A memory's cached result with the runs of entries added to the zoo since (``new``, from ``compare``
    on those entries alone) merged in; ranking agreement and cost ratios recomputed over the whole zoo."""
    out = {**cached, "entries": {**cached["entries"], **new["entries"]}}
    if "runs" in cached:
        out["runs"] = {s: {**cached["runs"][s], **new["runs"].get(s, {})} for s in cached["runs"]}
    out.update(memory_agreement(full, out["entries"], [e.name for e in zoo]))
    return out


def report(args: argparse.Namespace, results: dict[int, dict], zoo: list) -> str:
    names, models = [e.name for e in zoo], [e.model for e in zoo]
    seeds = sorted(results)
    lines = [f"Zoo {args.zoo.name} ({len(zoo)} configurations), {args.dataset}-format u{args.users} i{args.items}"
             + "".join(f" {k}={v}" for k, v in args.synth.items()) + ", "
             f"blocks of {args.block_days} days, full data {args.full_epochs} epochs (batch 512), memories "
             f"{args.memory_epochs} epochs (batch {args.memory_batch_size}, learning rates x"
             f"{args.memory_lr_scale:g}{', action logits started at the label rates' if args.memory_prior_init else ''});"
             " test AUC of "
             f"{results[seeds[0]].get('main_label', 'purchase')}.", ""]
    lines.append("Training chains per seed: " + ", ".join(f"{results[s]['stream_chains']:,}" for s in seeds))
    lines += ["", "At a 1% budget (mean ± sd over seeds " + ", ".join(map(str, seeds)) + "):", "",
              "| memory | Kendall tau | Spearman rho | top-1 | zoo mean AUC | train samples (full / memory) | train seconds (full / memory) | build s | (build + zoo) / full |",
              "|---|---|---|---|---|---|---|---|---|"]
    for method in args.methods:
        rows = [results[s][args.mkey].get(f"{method}@0.01") for s in seeds]
        rows = [r for r in rows if r]
        if not rows:
            continue

        def ms(key: str, rows: list = rows) -> str:
            v = [r[key] for r in rows]
            return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"

        full_s = statistics.mean(sum(results[s]["full"][n]["train_seconds"] for n in names) for s in seeds)
        mem_s = statistics.mean(sum(r["entries"][n]["train_seconds"] for n in names) for r in rows)
        build = statistics.mean(r["build_seconds"] for r in rows)
        for r in rows:
            r["zoo_auc"] = statistics.mean(r["entries"][n]["auc"] for n in names)
        lines.append(f"| {method} | {ms('tau')} | {ms('rho')} | {ms('top1')} | {ms('zoo_auc')} | "
                     f"{statistics.mean(r['samples_ratio'] for r in rows):.1f}x | "
                     f"{statistics.mean(r['seconds_ratio'] for r in rows):.1f}x | {build:.1f} | "
                     f"{full_s / (build + mem_s):.1f}x |")
    zoo_full = [statistics.mean(results[s]["full"][n]["auc"] for n in names) for s in seeds]
    lines.append(f"| full data | 1 | 1 | 1 | {statistics.mean(zoo_full):.3f} | 1x | 1x | | |")
    lines += coverage_table(args, seeds)
    rerun = [s for s in seeds if "full_reseeded" in results[s]]
    if rerun:
        mean_full, ceiling = {}, []
        for s in rerun:
            full = [results[s]["full"][n]["auc"] for n in names]
            again = [results[s]["full_reseeded"][n]["auc"] for n in names]
            ceiling.append(ranking_agreement(full, again))
            mean_full[s] = [(a + b) / 2 for a, b in zip(full, again)]
        lines += ["", "Reference: full data trained again with another training seed, against the first run: "
                      + "; ".join(f"seed {s} tau {c['tau']:.3f} (rho {c['rho']:.3f}, top-1 {c['top1']:.0f})"
                                  for s, c in zip(rerun, ceiling))
                  + ". Against the mean AUC of the two full-data runs (a steadier reference), 1% memories "
                    "(mean ± sd over seeds " + ", ".join(map(str, rerun)) + "):", "",
                  "| memory | Kendall tau | Spearman rho | top-1 |", "|---|---|---|---|"]
        for m in args.methods:
            agree = [ranking_agreement(mean_full[s], [results[s][args.mkey][f"{m}@0.01"]["entries"][n]["auc"] for n in names])
                     for s in rerun if f"{m}@0.01" in results[s][args.mkey]]
            if agree:
                lines.append(f"| {m} | " + " | ".join(_mean_sd([a[k] for a in agree]) for k in ("tau", "rho", "top1")) + " |")
        lines += ["", "Kendall tau of the 1% memories against each full-data run alone, first / reseeded (training seed "
                      f"+ 0 / + 100; the memories' zoo was trained with seed + {args.memory_seed_offset}):", "",
                  "| memory | " + " | ".join(f"seed {s}" for s in rerun) + " |", "|---" * (1 + len(rerun)) + "|"]
        for m in args.methods:
            cells = []
            for s in rerun:
                r = results[s][args.mkey].get(f"{m}@0.01")
                mem = [r["entries"][n]["auc"] for n in names] if r else None
                cells.append(" / ".join(f"{ranking_agreement([results[s][k][n]['auc'] for n in names], mem)['tau']:.3f}"
                                        for k in ("full", "full_reseeded")) if mem else "")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        # both sides averaged over training seeds: the zoo on the memory with seed + 0, + 100, ... (runs of
        # this recipe), against full data with the same offsets; over the first two, three, ... there are
        base = args.recipe_key
        offsets = [o for o in TRAIN_OFFSETS
                   if all(full_key(o) in results[s] and memory_key(base, o) in results[s] for s in rerun)]
        if len(offsets) > 2:
            pairs = [(a, b) for i, a in enumerate(offsets) for b in offsets[i + 1:]]
            lines += ["", "The full-data runs against each other, tau per seed (" + ", ".join(map(str, rerun)) + "): "
                      + "; ".join(f"+ {a} vs + {b}: " + " / ".join(
                          f"{ranking_agreement(*[[results[s][full_key(o)][n]['auc'] for n in names] for o in (a, b)])['tau']:.3f}"
                          for s in rerun) for a, b in pairs) + "."]
        # full data against itself with both sides averaged: the first k full-data runs' mean AUCs against the
        # next k runs' (disjoint seeds), the most a memory can be expected to reach in the k-seed protocol
        full_offsets = [o for o in TRAIN_OFFSETS if all(full_key(o) in results[s] for s in rerun)]
        for k in range(2, len(full_offsets) // 2 + 1):
            halves = full_offsets[:k], full_offsets[k: 2 * k]
            taus = [ranking_agreement(*[[statistics.mean(results[s][full_key(o)][n]["auc"] for o in half)
                                         for n in names] for half in halves])["tau"] for s in rerun]
            lines += ["", f"Full data against itself, both sides averaged over {k} training seeds (+ "
                      + " / + ".join(map(str, halves[0])) + " against + " + " / + ".join(map(str, halves[1]))
                      + "), tau per seed: " + " / ".join(f"{t:.3f}" for t in taus)
                      + f"; {_mean_sd(taus)} on the mean."]
        for n_off in range(2, len(offsets) + 1):
            use = offsets[:n_off]
            lines += ["", f"Both sides averaged over {n_off} training seeds (+ " + " / + ".join(map(str, use))
                          + f"): the zoo's mean test AUC of its {n_off} runs on the memory against that of its "
                          f"{n_off} runs on full data (mean ± sd over seeds " + ", ".join(map(str, rerun)) + "):", "",
                      "| memory | Kendall tau | Spearman rho | top-1 | pairs as full, across models | within a model "
                      "| of the pairs every full-data run orders alike (how many) | per seed tau |",
                      "|---|---|---|---|---|---|---|---|"]
            yardsticks = sorted({k for s in rerun for k in results[s].get(base, {}) if k.startswith("full-steps")},
                                key=lambda k: results[rerun[0]][base].get(k, {}).get("meta", {}).get("steps", 0))
            for m in [*args.methods, *yardsticks]:
                key = m if m in yardsticks else f"{m}@0.01"
                agree = averaged_agreement(results, rerun, base, use, key, names, models)
                if agree and m in yardsticks:
                    m = f"full data, its first {results[rerun[0]][base][key]['meta']['steps']} steps"
                if agree:
                    cells = [_mean_sd([a[k] for a in agree]) for k in ("tau", "rho", "top1", "across", "within")]
                    cells.append(f"{_mean_sd([a['resolved'] for a in agree])} ("
                                 + " / ".join(f"{a['resolved_pairs']:.0f}" for a in agree) + ")"
                                 if all("resolved" in a for a in agree) else "")
                    lines.append(f"| {m} | " + " | ".join(cells) + " | "
                                 + " / ".join(f"{a['tau']:.3f}" for a in agree) + " |")
        if len(offsets) > 1 and len(args.budgets) > 1:
            cells = {m: [averaged_agreement(results, rerun, base, offsets, f"{m}@{b}", names, models)
                         for b in args.budgets] for m in args.methods}
            for what, key in (("Kendall tau", "tau"), ("Pairs ordered as full data within a model", "within")):
                lines += ["", f"{what} against budget, both sides averaged over {len(offsets)} training seeds "
                              "(mean ± sd over seeds " + ", ".join(map(str, rerun))
                              + "; empty where a budget lacks runs):",
                          "",
                          "| memory | " + " | ".join(f"{b:.2%}" for b in args.budgets) + " |",
                          "|---" * (1 + len(args.budgets)) + "|"]
                lines += [f"| {m} | " + " | ".join(_mean_sd([a[key] for a in c]) if c else "" for c in row) + " |"
                          for m, row in cells.items() if any(row)]
    s0 = seeds[0]
    # every memory of the first seed at this recipe, 1% first (a column per method and budget)
    present, heads = [], []
    for b in sorted(args.budgets, key=lambda b: b != 0.01):
        for m in args.methods:
            if f"{m}@{b}" in results[s0][args.mkey]:
                present.append(f"{m}@{b}")
                heads.append(m if b == 0.01 else f"{m} {b:.0%}")
    for metric in ("auc", "gauc") if present else ():
        title = f"Test {metric.upper()} per configuration, seed {s0}, memories (training seed + {args.memory_seed_offset}):"
        lines += ["", title, "",
                  "| config | full | " + " | ".join(heads) + " |", "|---" * (2 + len(present)) + "|"]
        for n in names:
            cells = [f"{results[s0][args.mkey][k]['entries'][n][metric]:.4f}" for k in present]
            lines.append(f"| {n} | {results[s0]['full'][n][metric]:.4f} | " + " | ".join(cells) + " |")
    sweep = [s for s in seeds if s in args.sweep_seeds]
    if sweep:
        lines += ["", f"Kendall tau against budget (seed {sweep[0]}):", "",
                  "| memory | " + " | ".join(f"{b:.2%}" for b in args.budgets) + " |", "|---" * (1 + len(args.budgets)) + "|"]
        for m in args.methods:
            cells = [results[sweep[0]][args.mkey].get(f"{m}@{b}") for b in args.budgets]
            lines.append(f"| {m} | " + " | ".join(f"{c['tau']:.3f}" if c else "" for c in cells) + " |")
        lines += ["", f"Mean test AUC of the zoo trained on the memory, against budget (seed {sweep[0]}; full data: "
                      f"{zoo_full[seeds.index(sweep[0])]:.4f}):", "",
                  "| memory | " + " | ".join(f"{b:.2%}" for b in args.budgets) + " |", "|---" * (1 + len(args.budgets)) + "|"]
        for m in args.methods:
            cells = [results[sweep[0]][args.mkey].get(f"{m}@{b}") for b in args.budgets]
            lines.append(f"| {m} | " + " | ".join(
                f"{statistics.mean(c['entries'][n]['auc'] for n in names):.4f}" if c else "" for c in cells) + " |")
        if not args.no_figure:
            plot(args, results[sweep[0]], sweep[0])
    return "\n".join(lines) + "\n"


def coverage_table(args: argparse.Namespace, seeds: list[int]) -> list[str]:
    """Report lines: what each 1% memory covers of the test split (``memory_coverage``), mean over seeds."""
    covered = {}
    for m in args.methods:
        dirs = [args.out / f"seed{s}" / f"{m}-0.01" for s in seeds]
        if all(d.is_dir() for d in dirs):
            covered[m] = [memory_coverage(d) for d in dirs]
    if not covered:
        return []
    full = statistics.mean(c["items_full"] for c in next(iter(covered.values())))
    return ["", "Share of the test chains whose user / item at least one slot of the 1% memory holds, and whose "
                f"item at least five hold (mean over seeds; the full training split covers {full:.3f} of their "
                "items):", "", "| memory | users | items | items in >= 5 slots |", "|---|---|---|---|",
            *(f"| {m} | " + " | ".join(f"{statistics.mean(c[k] for c in cov):.3f}" for k in ("users", "items", "items_5"))
              + " |" for m, cov in covered.items())]


def averaged_agreement(results: dict[int, dict], seeds: list[int], base: str, offsets: list[int], key: str,
                       names: list[str], models: list[str] | None = None) -> list[dict[str, float]] | None:
    """Per seed, the ranking agreement of the zoo's mean AUC over its runs on memory ``key`` (training seeds
    + ``offsets``, recipe ``base``) with its mean over full data's runs at the same offsets (with ``models``,
    each name's model, also ``pair_agreement``); None unless every run is cached for every name (a zoo grown
    since the cache was written is complete only once its new entries are trained at every offset)."""
    def complete(s: int, o: int) -> bool:
        runs = results[s].get(memory_key(base, o), {})
        return (key in runs and set(names) <= runs[key]["entries"].keys()
                and set(names) <= results[s].get(full_key(o), {}).keys())

    if not all(complete(s, o) for s in seeds for o in offsets):
        return None
    out = []
    for s in seeds:
        full = [statistics.mean(results[s][full_key(o)][n]["auc"] for o in offsets) for n in names]
        mem = [statistics.mean(results[s][memory_key(base, o)][key]["entries"][n]["auc"] for o in offsets) for n in names]
        # the pairs full data resolves: by every full-data run cached for the seed, not only those at ``offsets``
        every_run = [[results[s][full_key(o)][n]["auc"] for n in names]
                     for o in TRAIN_OFFSETS if set(names) <= results[s].get(full_key(o), {}).keys()]
        out.append({**ranking_agreement(full, mem), **(pair_agreement(full, mem, models) if models else {}),
                    **(resolved_pair_agreement(every_run, mem) if len(every_run) > 2 else {})})
    return out


def _mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def plot(args: argparse.Namespace, result: dict, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in args.methods:
        pts = [(b * 100, result[args.mkey][f"{m}@{b}"]["tau"]) for b in args.budgets if f"{m}@{b}" in result[args.mkey]]
        if len(pts) > 1:  # a method run at one budget only is in the tables, not the curve
            ax.plot(*zip(*pts), marker="o", label=m)
    ax.set_xscale("log")
    ax.set_xticks([b * 100 for b in args.budgets], [f"{b * 100:g}" for b in args.budgets])
    ax.minorticks_off()
    ax.set_xlabel("memory budget (% of the training stream)")
    ax.set_ylabel("Kendall tau vs full-data ranking")
    ax.set_title(f"Architecture ranking from a memory\n({args.dataset}-format, seed {seed}; zoo on memories: "
                 f"{args.memory_epochs} epochs at batch {args.memory_batch_size})", fontsize=10)
    ax.axhline(0.8, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = ROOT / "benchmarks" / "figures" / f"diet_tau_budget_{args.dataset.split('-')[0]}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def parse_synth(items: list[str], parser: argparse.ArgumentParser) -> dict[str, float]:
    """``--synth KEY=NUMBER ...`` as generator overrides (ints stay ints: ``rows_per_user_day=8``)."""
    out = {}
    for text in items:
        key, sep, value = text.partition("=")
        try:
            number = float(value) if sep else None
        except ValueError:
            number = None
        if number is None:
            parser.error(f"--synth: expected KEY=NUMBER, got {text!r}")
        out[key] = int(number) if number.is_integer() and "." not in value else number
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sweep-seeds", type=int, nargs="*", default=[0])
    p.add_argument("--reseed-seeds", type=int, nargs="*", default=None,
                   help="seeds whose full-data zoo is trained again with another seed (default: the sweep seeds)")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.0025, 0.005, 0.01, 0.02, 0.05])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--dataset", default="tmall", choices=["tmall", "kuairand-pure"])
    p.add_argument("--zoo", type=Path, default=None, help="default: configs/distill/zoo_<tmall|kuairand>.yaml")
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--items", type=int, default=3000)
    p.add_argument("--synth", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides of the generator's config (e.g. affinity_scale=8 like_bias=-5.5), part of the "
                        "data folders' names")
    p.add_argument("--block-days", type=int, default=7)
    p.add_argument("--full-epochs", type=int, default=2)
    p.add_argument("--memory-epochs", type=int, default=6)
    p.add_argument("--memory-batch-size", type=int, default=MEMORY_BATCH_SIZE,
                   help="default: the toolkit's memory recipe (recsys.distill.zoo; before 2026-11-28's seventh "
                        "stop it was 256, at learning-rate scale 1)")
    p.add_argument("--memory-lr-scale", type=float, default=MEMORY_LR_SCALE,
                   help="multiply the zoo's learning rates by this on the memories (full data: the zoo's own)")
    p.add_argument("--memory-prior-init", action="store_true",
                   help="start the action logits of the runs on memories at the memory's label rates "
                        "(recsys.models.mmoe.ChainHeadsModule.init_action_prior; A2Gen starts as it does)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "_work" / "diet")
    p.add_argument("--memory-seed-offset", type=int, default=0,
                   help="train the zoo on memories with training seed + this (0: the full-data runs' seed, so "
                        "the same initial weights; 100: the reseeded full-data runs' seed)")
    p.add_argument("--full-seed-offset", type=int, default=RESEED, choices=TRAIN_OFFSETS[1:],
                   help="training-seed offset of the reseeded seeds' second full-data zoo")
    p.add_argument("--full-steps", type=int, nargs="*", default=None, metavar="K",
                   help="also train the zoo on full data for K times as many steps as a 1%% memory gets at the memory "
                        "recipe (its batch, learning rates and training seed offset; no K: 1): how far that many "
                        "steps of the stream itself rank it")
    p.add_argument("--report-only", action="store_true", help="report what is cached; train nothing new")
    p.add_argument("--no-figure", action="store_true",
                   help="leave benchmarks/figures/ alone (a side run whose budgets are not the figure's)")
    args = p.parse_args()
    args.synth = parse_synth(args.synth, p)
    args.recipe_key = recipe_key(args.memory_epochs, args.memory_batch_size, args.memory_lr_scale,
                                 args.memory_prior_init)
    args.mkey = memory_key(args.recipe_key, args.memory_seed_offset)
    if args.full_steps is not None and not args.full_steps:
        args.full_steps = [1]
    args.zoo = args.zoo or ROOT / "configs" / "distill" / f"zoo_{args.dataset.split('-')[0]}.yaml"
    zoo = load_zoo(args.zoo)
    results = {s: run_seed(args, s, zoo) for s in args.seeds}
    text = report(args, results, zoo)
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
