"""MARC results (issue #9 §2 and §4): the layer probe and MARC against its baselines, on synthetic
MovieLens-1M-format data with planted title themes and on KuaiRand-format template text.

Per dataset: every layer of the encoder (all-MiniLM-L6-v2 from the ``minilm`` extra by default) over the
item and user texts (``recsys.distill.text`` templates), cached; then

1. the probe: every layer x d in {16, 32, 64} x {PCA, learned linear}, one CTR model (``--ctr-model``) each;
2. at d = 32, over ``--seeds`` seeds (the seed drives both the compression's and the CTR model's training):
   no text features; final-layer PCA; best-middle-layer PCA (the best probe layer strictly between the
   embeddings and the final layer); the uncompressed final layer (384-d through the CTR model's own linear
   map); an autoencoder of the final layer; Matryoshka (MRL) codes; MARC's codes from the final layer,
   after all ``--marc-epochs`` and early-stopped on the validation split (``recsys marc train``'s default);
   on synthetic MovieLens also the planted truth (each item's hidden theme, one-hot: what the titles' theme
   words say).

``--ctr-model`` picks the CTR model: DeepFM (default), whose FM term crosses a text vector with the user's
embedding, or MMoE, PLE, DIN, which concatenate it (MMoE could not use even the planted truth: BENCHMARKS.md);
each model's runs are kept apart in the work folder (MMoE's under the original file names).
``--side-features`` restricts the side fields the CTR model reads (alone: ids only, so the text vectors are
the items' only side information).
``--learned`` keeps only some of the learned rows (``autoencoder mrl marc marc-es``; default all), so a long
run can spend its CPU on more seeds of the comparison that matters.

Writes ``<work>/<dataset>/results-<model>.md``, ``probe-<model>.png`` and ``results-<model>.json`` (MMoE: no
suffix; ``--side-features`` adds ``-side-...``). Command:
``.venv/bin/python benchmarks/marc_results.py`` (about 25 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import time
from pathlib import Path

from recsys.data.prepare import PrepareOptions, make_source, prepare
from recsys.data.splits import VALID
from recsys.data.synth import synthesize
from recsys.distill.compress import autoencoder, pca
from recsys.distill.marc import MARCConfig, save_codes, train_marc
from recsys.distill.marc_data import encode_dataset, main_label_of, training_pairs
from recsys.distill.probe import format_probe, layer_probe, plot_probe, summarize, train_ctr

CTR = {"dim": 16}
LEARNED = ("autoencoder", "mrl", "marc", "marc-es")  # the learned compressions' rows, as --learned names them


def planted_ceiling(name: str, data: Path, users: int, items: int, label: str) -> dict[str, float]:
    """Test AUC of the synthetic MovieLens truth's own scores (``{}`` for other datasets): the user-theme
    affinity alone, and the rating's whole latent score without its noise (affinity, rater bias, movie
    quality): how far any CTR model is from what the data allow."""
    if not name.startswith("movielens"):
        return {}
    import numpy as np
    import torch
    from torchmetrics.functional.classification import binary_auroc

    from recsys.data.prepared import PreparedDataset
    from recsys.data.splits import TEST
    from recsys.data.synth import make_config, movielens_truth

    cfg = make_config(name, users, items, seed=0)
    truth, ds = movielens_truth(cfg), PreparedDataset(data)
    raw = {k: np.concatenate([[0], ds.vocab(k).raw.to_numpy().astype(np.int64)]) for k in ("user", "item")}
    u, i, y = training_pairs(data, label, TEST)
    users_raw, items_raw = raw["user"][u.numpy()], raw["item"][i.numpy()]
    affinity = truth.affinity(users_raw, items_raw).astype(np.float64)
    latent = cfg.taste_weight * affinity + truth.user_bias[users_raw] + truth.item_quality[items_raw]
    return {k: float(binary_auroc(torch.from_numpy(v), y.long())) for k, v in
            (("user-theme affinity", affinity), ("noise-free latent score", latent))}


def planted_themes(name: str, data: Path, users: int, items: int, out: Path) -> Path | None:
    """The synthetic MovieLens truth as an item vectors file: each item's theme one-hot, rows aligned with
    the prepared vocabulary (``None`` for other datasets)."""
    if not name.startswith("movielens"):
        return None
    if not out.exists():
        import torch

        from recsys.data.synth import make_config, movielens_truth
        from recsys.distill.text import item_texts

        truth = movielens_truth(make_config(name, users, items, seed=0))
        themes = torch.tensor([truth.theme_of_title(t) for t in item_texts(data)])
        onehot = torch.zeros(len(themes), len(truth.themes))
        known = themes >= 0  # row 0 (padding) only
        onehot[known.nonzero().squeeze(1), themes[known]] = 1.0
        save_codes({"item": onehot}, out, {"method": "planted theme (one-hot)"})
    return out


def dataset(name: str, root: Path, users: int, items: int) -> Path:
    prepared = root / "prepared"
    if not (prepared / "manifest.json").exists():
        synthesize(name, root / "raw", users=users, items=items, seed=0)
        prepare(make_source(name, root / "raw"), prepared, PrepareOptions(), log=lambda _: None)
    return prepared


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--datasets", nargs="+", default=["movielens-1m", "kuairand-pure"])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--dims", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--epochs", type=int, default=2, help="CTR model epochs")
    ap.add_argument("--marc-epochs", type=int, default=8)
    ap.add_argument("--work", type=Path, default=Path("benchmarks/_work/marc"))
    ap.add_argument("--fresh-cache", action="store_true", help="re-encode (to measure encoding throughput)")
    ap.add_argument("--early-stopped", action=argparse.BooleanOptionalAction, default=True,
                    help="also MARC-32 trained with early stopping on the validation split's pairs, what `recsys marc "
                         "train` does by default (its own row; on by default)")
    ap.add_argument("--learned", nargs="*", default=list(LEARNED), choices=list(LEARNED),
                    help="which learned compressions to train and score (default all; a long run can spend its CPU "
                         "on fewer rows and more seeds)")
    ap.add_argument("--ctr-model", default="DeepFM", choices=["MMoE", "PLE", "DIN", "DeepFM"])
    ap.add_argument("--side-features", nargs="*", default=None,
                    help="the item / user side fields the CTR model reads (default all; the flag alone: ids only, "
                         "so the text vectors are the items' only side information)")
    ap.add_argument("--main-label", default=None,
                    help="the action to predict (default: the dataset's, MovieLens and KuaiRand like)")
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    for name in args.datasets:
        root = args.work / name
        data = dataset(name, root, args.users, args.items)
        label = main_label_of(data, args.main_label)
        if args.fresh_cache:
            shutil.rmtree(root / "cache", ignore_errors=True)
        started = time.perf_counter()
        reps = encode_dataset(data, args.encoder, root / "cache")
        encode_s = time.perf_counter() - started
        manifest = json.loads((root / "cache" / "items" / "manifest.json").read_text())
        final = max(reps)
        item_h, user_h = reps[final]
        out = [f"# MARC on {name} (synthetic, {args.users} users x {args.items} items), encoder {args.encoder}", "",
               f"{item_h.shape[0] - 1} item texts and {user_h.shape[0] - 1} user texts, {final + 1} layers x "
               f"{item_h.shape[1]}-d; encoding {encode_s:.1f} s this run (item texts/s when encoded: "
               f"{manifest.get('compute', {}).get('texts_per_second', manifest.get('texts_per_second', '?'))}); "
               f"main label {label}.", ""]

        # 1. the probe
        tag = "" if args.ctr_model == "MMoE" else f"-{args.ctr_model}"  # MMoE runs keep the original names
        if args.side_features is not None:
            tag += "-side-" + ("-".join(args.side_features) or "none")
        cached = root / f"probe_rows{tag}.json"  # the probe's CTR runs are the slow part: kept between runs
        if cached.exists():
            rows = json.loads(cached.read_text())
        else:
            rows = layer_probe(data, reps, root / "vectors", dims=args.dims, seeds=[0], model=args.ctr_model,
                               init_args=CTR, epochs=args.epochs, main_label=label,
                               side_features=args.side_features)
            cached.write_text(json.dumps(rows))
        probe = summarize(rows)
        plot_probe(probe, root / f"probe{tag}.png",
                   f"layer probe, {args.encoder} on {name} (synthetic), {args.ctr_model}")
        out += ["## Layer probe (seed 0)", "", format_probe(probe), ""]
        middle = [r for r in probe if r["method"] == "pca" and r["d"] == 32 and 0 < r["layer"] < final]
        best_middle = max(middle, key=lambda r: r["auc"])["layer"]

        # 2. MARC vs baselines at d = 32
        pairs = training_pairs(data, label)
        learned = set(args.learned) - (set() if args.early_stopped else {"marc-es"})
        valid = training_pairs(data, label, VALID) if "marc-es" in learned else None
        runs = root / f"results_rows{tag}.json"  # CTR runs done, by "method|seed": a rerun only does what is missing
        done = json.loads(runs.read_text()) if runs.exists() else {}
        results: dict[str, list[dict]] = {}
        bytes_per_item = {}
        vec = root / "vectors"
        oracle = planted_themes(name, data, args.users, args.items, vec / "planted-themes.safetensors")
        for seed in args.seeds:
            files = {
                "no text features": None,
                f"final layer ({final}) PCA-32": vec / f"layer{final}-pca32.safetensors",
                f"best middle layer ({best_middle}) PCA-32": vec / f"layer{best_middle}-pca32.safetensors",
                f"final layer uncompressed ({item_h.shape[1]}-d)": vec / f"layer{final}-full.safetensors",
            }
            ae = vec / f"ae32-s{seed}.safetensors"
            if "autoencoder" in learned:
                if not ae.exists():
                    save_codes({"item": autoencoder(item_h, 32, seed=seed), "user": autoencoder(user_h, 32, seed=seed)},
                               ae, {"method": "autoencoder", "layer": final, "seed": seed})
                files["final layer autoencoder-32"] = ae
            if oracle is not None:
                files["planted theme, one-hot (the truth the titles carry)"] = oracle
            variants = [("MRL-32 (8/16/32)", MARCConfig(dim=32, mrl_dims=(8, 16, 32)), None, "mrl32", "mrl"),
                        ("MARC-32", MARCConfig(dim=32), None, "marc32", "marc"),
                        ("MARC-32, early-stopped on validation", MARCConfig(dim=32), valid, "marc32es", "marc-es")]
            for label_name, cfg, held_out, stem, row in variants:
                if row not in learned:
                    continue
                cfg.epochs, cfg.seed = args.marc_epochs, seed
                path = vec / f"{stem}-item-s{seed}.safetensors"
                if not path.exists():
                    model, history = train_marc(item_h, user_h, pairs, cfg, valid=held_out)
                    save_codes(model.codes(item_h, user_h), path, {"method": label_name, "seed": seed,
                                                                   "history": history})
                files[label_name] = path
            for method, path in files.items():
                if seed == args.seeds[0] and path is not None:
                    from safetensors import safe_open

                    with safe_open(str(path), "pt") as f:
                        bytes_per_item[method] = f.get_slice("item").get_shape()[1] * 4
                key = f"{method}|{seed}"
                if key not in done:
                    done[key] = train_ctr(data, path, model=args.ctr_model, init_args=CTR, epochs=args.epochs,
                                          seed=seed, main_label=label, side_features=args.side_features)
                    runs.write_text(json.dumps(done))
                m = done[key]
                results.setdefault(method, []).append(m)
                print(f"{name} seed {seed} {method}: auc {m['auc']:.4f} logloss {m['logloss']:.4f}", flush=True)

        ceiling = planted_ceiling(name, data, args.users, args.items, label)
        if ceiling:
            out += ["Test AUC of the planted truth's own scores: " + ", ".join(f"{k} {v:.4f}" for k, v in ceiling.items())
                    + ".", ""]
        side = "all" if args.side_features is None else args.side_features or "none"
        out += ["## MARC vs baselines, d = 32", "",
                f"{args.ctr_model} (dim 16, {args.epochs} epochs; side fields: {side}) on the test split, "
                f"mean ± std over seeds {args.seeds}.", "",
                "| features | AUC | LogLoss | bytes per item (fp32) |", "| :-- | --: | --: | --: |"]
        for method, ms in results.items():
            aucs, lls = [m["auc"] for m in ms], [m["logloss"] for m in ms]
            sd = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
            out.append(f"| {method} | {statistics.mean(aucs):.4f} ± {sd:.4f} | {statistics.mean(lls):.4f} | "
                       f"{bytes_per_item.get(method, 0)} |")
        (root / f"results{tag}.md").write_text("\n".join(out) + "\n")
        (root / f"results{tag}.json").write_text(json.dumps({"probe": probe, "results": results}, indent=1))
        print("\n".join(out), flush=True)


if __name__ == "__main__":
    main()
