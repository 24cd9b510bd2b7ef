"""The ``recsys`` command. Subcommands are generated from the typed signatures below (jsonargparse, the
parser behind Lightning's CLI): ``recsys data prepare --help`` lists every option with its type.

    recsys quickstart                                   synthesize, prepare, train, evaluate (offline)
    recsys fit --config configs/a2gen_tmall.yaml        Lightning's CLI (also validate, test)
    recsys data synth --dataset kuairand-pure --out raw/kr --users 2000
    recsys data prepare --dataset kuairand-pure --raw raw/kr --out data/kr
    recsys distill diet --data data/kr --budget 0.01 --out memories/kr-diet
    recsys distill compare --data data/kr --memories '[memories/kr-diet]' --zoo configs/distill/zoo_tmall.yaml
    recsys export --checkpoint runs/gems/checkpoints/best.ckpt --quantize fp8 --out artifacts/gems-fp8
    recsys serve-bench --artifacts '[artifacts/gems-fp32, artifacts/gems-fp8]'
    recsys fit --config configs/sasrec_kuairand.yaml --trainer.strategy torchrec --trainer.devices 2
    recsys plan --train_config configs/sasrec_kuairand.yaml --world_size 8 --device cuda
    recsys checkpoint consolidate --checkpoint runs/.../last.ckpt --out last-plain.ckpt

Bad input exits with status 1 and a message naming the file, line and column; bad arguments exit with 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

Dataset = Literal["tmall", "tmall-rec", "kuairand-pure", "kuairand-1k", "kuairand-27k", "movielens-100k", "movielens-1m"]


def data_prepare(
    *,
    dataset: Dataset,
    raw: Path,
    out: Path,
    year: int | None = None,
    include_random: bool = True,
    drop_duplicates: bool = True,
    kcore: int = 0,
    train_end: int | None = None,
    valid_end: int | None = None,
    rows_per_bucket: int | None = None,
    force: bool = False,
) -> None:
    """Prepare a raw public dataset: events, sequences, vocabularies and splits as Parquet + manifest.

    Args:
        dataset: which release the raw files are.
        raw: folder with the raw files as downloaded (KuaiRand: the release's data/ folder or its root;
            MovieLens: the ml-100k/ or ml-1m/ folder or the folder holding it).
        out: output folder (written atomically; re-running with unchanged inputs does nothing).
        year: Tmall only: the year of the mmdd time stamps (default 2014).
        include_random: KuaiRand only: also read the randomly exposed log (is_rand = 1).
        drop_duplicates: drop exact duplicate log rows (their count goes into the manifest).
        kcore: keep only users and items with at least this many events, iteratively (0 = off).
        train_end: last training day yyyymmdd (default: KuaiRand 20220421, Tmall 1028 of the year,
            MovieLens-100K 19980307, MovieLens-1M 20001130; MovieLens days are UTC).
        valid_end: last validation day yyyymmdd (default: KuaiRand 20220428, Tmall 1104 of the year,
            MovieLens-100K 19980331, MovieLens-1M 20001231).
        rows_per_bucket: rows processed in memory at once; larger logs stream through user buckets.
        force: prepare even if the output is up to date.
    """
    from recsys.data.prepare import PrepareOptions, make_source, prepare

    source = make_source(dataset, raw, year=year, include_random=include_random)
    options = PrepareOptions(drop_duplicates, kcore, train_end, valid_end, rows_per_bucket)
    prepare(source, out, options, force=force)


def data_synth(
    *,
    dataset: Dataset,
    out: Path,
    users: int | None = None,
    items: int | None = None,
    days: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> None:
    """Write a synthetic release with the exact file names, schemas and formatting of the real one.

    Args:
        dataset: which release to imitate.
        out: folder to write the raw files into.
        users: number of users (default: the release's).
        items: number of items (default: the release's).
        days: number of days (KuaiRand 1..30 ending 2022-05-08; Tmall ending 11-11; not for MovieLens,
            whose ratings span the real release's dates).
        seed: random seed; the same arguments give byte-identical files.
        overwrite: replace ``out`` if it already holds files.
    """
    from recsys.data.synth import synthesize

    report = synthesize(dataset, out, users=users, items=items, days=days, seed=seed, overwrite=overwrite)
    print(report)


def quickstart(
    *,
    out: Path = Path("runs/quickstart"),
    users: int = 2000,
    items: int = 1500,
    epochs: int = 2,
    seed: int = 0,
) -> None:
    """The main job on an embedded default, offline: synthesize a small KuaiRand-format dataset, prepare it,
    train A2Gen (and PLE beside it) on its action chains with a progress bar, evaluate and print the
    per-action metrics.

    Args:
        out: working folder (raw files, prepared data, logs and checkpoints).
        users: synthetic users.
        items: synthetic videos.
        epochs: training epochs.
        seed: random seed of the data and the training.
    """
    from recsys.quickstart import run

    run(out=out, users=users, items=items, epochs=epochs, seed=seed)


def bench_optim(
    *,
    model: str = "sasrec-head",
    data: Path | None = None,
    out: Path = Path("runs/bench-optim"),
    seeds: list[int] = [0, 1, 2],  # noqa: B006 (read-only defaults, shown in --help)
    adamw_lrs: list[float] = [1e-3, 3e-3, 1e-2],  # noqa: B006
    muon_lrs: list[float] = [0.005, 0.01, 0.02, 0.05],  # noqa: B006
    optimizers: list[str] = ["adamw", "muonrec", "torch-muon"],  # noqa: B006
    max_epochs: int = 30,
    patience: int = 8,
    evals_per_epoch: int = 4,
    eval_per_user: int | None = 5,
    users: int = 5000,
    items: int = 3000,
) -> None:
    """Benchmark AdamW, MuonRec and torch.optim.Muon (+AdamW) on one model: learning-rate sweep, then every
    optimizer over several seeds with early stopping on validation NDCG@10; writes runs.csv, curves.csv,
    curves.png and summary.md.

    Args:
        model: a registered model (recsys.optim.bench.MODELS: sasrec-head (an untied item-scoring head, on
            Muon: MuonRec's SASRec), sasrec (tied to the item table), a2gen, gems).
        data: a prepared dataset; by default a synthetic KuaiRand-Pure-format one made under ``out``.
        out: output folder.
        seeds: seeds of the final runs (the sweep uses the first).
        adamw_lrs: AdamW learning rates swept.
        muon_lrs: MuonRec Muon-family learning rates swept (its AdamW family uses AdamW's best rate).
        optimizers: which optimizers run over all seeds.
        max_epochs: epoch budget (the cosine schedule spans it).
        patience: evaluations without improvement before stopping.
        evals_per_epoch: validation evaluations per epoch.
        eval_per_user: validation and test targets per user (``null``: every positive of the period; a2gen
            scores every impression and ignores it); more targets make the early-stopping metric less noisy
            (the best of many noisy evaluations favours the optimizer that evaluates more often) at the cost
            of evaluation time.
        users: synthetic users (default data only).
        items: synthetic items (default data only).
    """
    from recsys.optim.bench import bench

    if data is None:
        from recsys.data.demo import demo_dataset

        data, _ = demo_dataset(out, users=users, items=items)
    print(bench(model=model, data=data, out=out, seeds=seeds, adamw_lrs=adamw_lrs, muon_lrs=muon_lrs,
                optimizers=optimizers, max_epochs=max_epochs, patience=patience, evals_per_epoch=evals_per_epoch,
                eval_per_user=eval_per_user))


def export(
    *,
    checkpoint: Path,
    out: Path,
    quantize: Literal["none", "fp8"] = "none",
    precision: Literal["fp32", "bf16"] = "fp32",
    mid: int | None = None,
    stage: int = 3,
    device: str = "cpu",
) -> None:
    """Export a trained GEMs or A2Gen checkpoint as a serving artifact: torch.export programs (fold, encode, one
    decoding step per SID level), weights in safetensors, semantic IDs, and a manifest with checksums.

    Args:
        checkpoint: a GEMs checkpoint written by ``recsys fit``.
        out: the artifact folder (written atomically).
        quantize: ``fp8``: attention and FFN linears in FP8 E4M3 (per-channel weight scales, per-token
            activation scales); the rest stays in ``precision``.
        precision: the precision of every weight (with ``--quantize fp8``: of every weight not in FP8;
            ``bf16`` is the GPU serving setting, ``fp32`` the exact reference).
        mid: the mid-term window (default: the data module's, saved in the checkpoint).
        stage: 3 reads the mid-term stream through the indexer's top-K, 1 densely.
        device: where the programs are traced and will run (``cuda``: FP8 linears use ``torch._scaled_mm``
            on GPUs with FP8 tensor cores).
    """
    from recsys.quant.export import export_checkpoint

    manifest = export_checkpoint(checkpoint, out, quantize=quantize, precision=precision, mid=mid, stage=stage,
                                 device=device)
    total = sum(f["bytes"] for f in manifest["files"].values())
    print(f"wrote {out} ({len(manifest['files'])} files, {total / 1e6:.2f} MB, {manifest['precision']}, "
          f"activations in {manifest['dtype']})")
    q = manifest["quantization"]
    if q:
        print(f"FP8 linears: {len(q['linears'])}, {q['quantized_bytes_fp32']:,} -> {q['quantized_bytes_fp8']:,} bytes "
              f"({q['quantized_bytes_fp8'] / max(q['quantized_bytes_fp32'], 1):.3f}x)")


def serve_bench(
    artifacts: list[Path],
    *,
    beams: list[int] = [128, 512],  # noqa: B006
    batches: list[int] = [1, 8, 64],  # noqa: B006
    repeats: int = 5,
) -> None:
    """Latency and throughput of serving artifacts side by side (e.g. fp32, bf16, fp8 exports of one model).

    Args:
        artifacts: artifact folders written by ``recsys export``.
        beams: beam widths (= items returned).
        batches: users per request batch.
        repeats: timed runs per setting (median reported).
    """
    from recsys.quant.serve_bench import serve_bench as run

    run(artifacts, beams, batches, repeats)  # prints each row as it is measured


def distill_diet(
    *,
    data: Path,
    out: Path,
    budget: float = 0.01,
    block_days: int = 1,
    main_label: str | None = None,
    seed: int = 0,
    init_score: Literal["tracin", "grad_norm", "el2n"] = "tracin",
    inner_steps: int = 20,
    unroll: int = 10,
    outer_steps: int = 4,
    replace_schedule: Literal["reservoir", "fixed"] = "reservoir",
    replace_fraction: float = 0.05,
    activity_strata: int = 1,
    user_cap: float = 0.0,
    relax_vocab: int = 0,
    relax_peak: float = 0.95,
) -> None:
    """Distil a prepared dataset's training stream into a DIET memory (a prepared dataset at ``out``).

    Args:
        data: a prepared Tmall or KuaiRand dataset.
        out: the memory folder (written atomically; a killed run resumes from its last finished stage).
        budget: memory size as a fraction of the training chains, in (0, 1).
        block_days: days per block of the stream.
        main_label: the action whose rate selections keep (default: Tmall purchase, KuaiRand like).
        seed: all randomness derives from it and the stage.
        init_score: stage 1's influence score.
        inner_steps: proxy training steps on the memory per outer step.
        unroll: inner steps differentiated (truncated back-propagation).
        outer_steps: meta-gradient steps on the soft labels and weights per block.
        replace_schedule: how many slots a block renews: ``reservoir``, what reservoir sampling renews
            (memory size x the block's share of the chains seen so far); ``fixed``, at most
            ``replace_fraction`` of the memory and only slots less influential than the new sample.
        replace_fraction: with ``fixed``, most slots replaced per block, as a fraction of the memory.
        activity_strata: user-activity buckets that selections keep beside the main label (1: none).
        user_cap: a user holds at most ``floor(user_cap x slots x its share of the chains seen) + 1`` slots
            (0: no cap).
        relax_vocab: the soft one-hot option: every field with at most this many ids (not user or item)
            becomes a learned distribution per slot (0: none).
        relax_peak: where a relaxed field starts: this probability on the slot's own id.
    """
    from recsys.distill.diet import DIETConfig, run_diet

    config = DIETConfig(budget=budget, block_days=block_days, main_label=main_label, seed=seed, init_score=init_score,
                        inner_steps=inner_steps, unroll=unroll, outer_steps=outer_steps,
                        replace_schedule=replace_schedule, replace_fraction=replace_fraction,
                        activity_strata=activity_strata, user_cap=user_cap, relax_vocab=relax_vocab,
                        relax_peak=relax_peak)
    run_diet(data, out, config)


def distill_baseline(
    *,
    data: Path,
    out: Path,
    method: Literal["random", "reservoir", "herding", "kcenter", "influence"],
    budget: float = 0.01,
    block_days: int = 1,
    main_label: str | None = None,
    seed: int = 0,
) -> None:
    """Select a memory with a baseline of DIET (same budget and writer; hard labels, weight 1).

    Args:
        data: a prepared Tmall or KuaiRand dataset.
        out: the memory folder (written atomically).
        method: random per block, reservoir over the stream, herding or k-center in a proxy's embedding
            space, or influence (DIET's stage 1 per block).
        budget: memory size as a fraction of the training chains, in (0, 1).
        block_days: days per block of the stream.
        main_label: the action whose rate selections keep.
        seed: random seed.
    """
    from recsys.distill.baselines import select
    from recsys.distill.memory import write_memory_dataset
    from recsys.distill.stream import ChainStream

    stream = ChainStream(str(data), main_label=main_label, block_days=block_days)
    memory = select(stream, method, budget, seed)
    write_memory_dataset(stream, memory, out, {"method": method, "budget": budget, "main_label": stream.main_label,
                                               "seed": seed})
    print(f"wrote {out}: {len(memory)} slots ({method}, {budget:.2%} of {stream.size:,} chains)")


def distill_compare(
    *,
    data: Path,
    memories: list[Path],
    zoo: Path,
    full_epochs: int = 2,
    memory_epochs: int = 6,
    batch_size: int = 512,
    memory_batch_size: int = 512,
    memory_lr_scale: float = 2.0,
    memory_prior_init: bool = False,
    seeds: list[int] = [0],  # noqa: B006 (read-only default, shown in --help)
    out: Path | None = None,
) -> None:
    """Train every configuration of a zoo on full data and on each memory; print test AUCs, the ranking
    agreement (Kendall tau, Spearman rho, top-1) and the training-cost ratios. With several training seeds
    both sides are averaged over them and full data's agreement with itself across seeds is printed too.

    Args:
        data: the prepared dataset the memories were built on.
        memories: memory folders written by ``recsys distill diet`` or ``recsys distill baseline``.
        zoo: a zoo file (configs/distill/zoo_*.yaml).
        full_epochs / memory_epochs: epochs on full data / on a memory.
        batch_size / memory_batch_size: training batch sizes on full data / on a memory (6 epochs at batch 512
            with learning rates x2: 33x fewer samples than 2 full-data epochs, and >= 30x cheaper for every
            configuration; see ``recsys.distill.zoo.MEMORY_BATCH_SIZE``).
        memory_lr_scale: multiply every configuration's learning rates by this on the memories.
        memory_prior_init: on the memories, start each model's action logits at the memory's label rates
            (DIN, MMoE, PLE, DeepFM; a run of a few dozen steps otherwise spends them learning the rates).
        seeds: training seeds; each configuration trains once per seed on full data and on each memory, and
            rankings compare the mean test AUCs (e.g. ``'[0, 1, 2]'``: one seed's ranking is mostly seed noise
            when configurations are close; BENCHMARKS.md, "DIET").
        out: also write the results as JSON here.
    """
    import json

    from recsys.distill.zoo import compare, format_comparison, load_zoo

    entries = load_zoo(zoo)
    result = compare(data, memories, entries, full_epochs=full_epochs, memory_epochs=memory_epochs,
                     batch_size=batch_size, memory_batch_size=memory_batch_size,
                     memory_lr_scale=memory_lr_scale, memory_prior_init=memory_prior_init, seeds=seeds)
    print(format_comparison(result))
    if out is not None:
        from recsys.data.manifest import atomic_write_text

        atomic_write_text(Path(out), json.dumps(result, indent=1))


def marc_probe(
    *,
    data: Path,
    encoder: str,
    out: Path,
    layers: list[int] | None = None,
    dims: list[int] = [16, 32, 64],  # noqa: B006
    methods: list[Literal["pca", "linear"]] = ["pca", "linear"],  # noqa: B006
    seeds: list[int] = [0],  # noqa: B006
    model: Literal["MMoE", "PLE", "DIN", "DeepFM"] = "DeepFM",
    dim: int = 16,
    epochs: int = 2,
    batch_size: int = 512,
    pooling: Literal["mean", "last"] = "mean",
    max_length: int = 128,
    main_label: str | None = None,
    item_template: str | None = None,
    user_template: str | None = None,
) -> None:
    """MARC's layer probe: every layer of a text encoder over the dataset's item and user texts, compressed to
    each width (PCA, or a learned linear map), fed to a CTR model; AUC and LogLoss per layer, and a PNG.

    Args:
        data: a prepared dataset.
        encoder: a local Hugging Face transformers model folder, or ``minilm`` (the ``minilm`` extra).
        out: folder for probe.md, probe.json, probe.png and the hidden-state cache (``cache/``).
        layers: layers to probe (0 = embedding output; default: all).
        dims: compressed widths.
        methods: ``pca`` (fixed components) and/or ``linear`` (a learned map, trained with the CTR model).
        seeds: training seeds of each CTR run.
        model: the CTR model (DeepFM: its FM term crosses a text vector with the user's embedding; MMoE could
            not use even a planted-truth item feature, BENCHMARKS.md "MARC"); dim: its embedding width;
            epochs, batch_size: its training.
        pooling: ``mean`` (encoders) or ``last`` (decoder LLMs) over the tokens.
        max_length: tokens per text.
        main_label: the predicted action (default: the dataset's).
        item_template / user_template: text templates (default: the dataset's, recsys.distill.text).
    """
    import json

    from recsys.data.manifest import atomic_write_text
    from recsys.distill.marc_data import encode_dataset, main_label_of
    from recsys.distill.probe import format_probe, layer_probe, plot_probe, summarize

    out = Path(out)
    reps = encode_dataset(data, encoder, out / "cache", pooling=pooling, max_length=max_length,
                          item_template=item_template, user_template=user_template)
    unknown = sorted(set(layers or []) - set(reps))
    if unknown:
        raise ValueError(f"layers {unknown} do not exist: the encoder has layers 0..{max(reps)}")
    chosen = {layer: reps[layer] for layer in (layers if layers is not None else sorted(reps))}
    rows = layer_probe(data, chosen, out / "vectors", dims=dims, methods=methods, seeds=seeds, model=model,
                       init_args={"dim": dim}, epochs=epochs, batch_size=batch_size,
                       main_label=main_label_of(data, main_label))
    summary = summarize(rows)
    table = format_probe(summary)
    print(table)
    atomic_write_text(out / "probe.md", table + "\n")
    atomic_write_text(out / "probe.json", json.dumps({"rows": rows, "summary": summary}, indent=1))
    plot_probe(summary, out / "probe.png", f"layer probe: {Path(str(encoder)).name} on {Path(data).name}")
    print(f"wrote {out / 'probe.md'}, {out / 'probe.png'}")


def marc_train(
    *,
    data: Path,
    encoder: str,
    out: Path,
    layer: int = -1,
    dim: int = 32,
    proxy: Literal["bce", "contrastive"] = "bce",
    matcher: Literal["mlp", "cross"] = "mlp",
    keep: float = 0.5,
    decouple: float = 0.5,
    user_side: Literal["id", "text"] = "id",
    finetune_layers: int = 0,
    epochs: int = 5,
    early_stopping: bool = True,
    seed: int = 0,
    cache: Path | None = None,
    pooling: Literal["mean", "last"] = "mean",
    max_length: int = 128,
    main_label: str | None = None,
) -> None:
    """Train MARC on a text encoder's layer and write the item and user codes that CTR models read
    (``pretrained``) and GEMs' semantic IDs can be built from (``sid_vectors``).

    Args:
        data: a prepared dataset (MARC trains on its training split).
        encoder: a local transformers model folder, or ``minilm``.
        out: the codes file (safetensors with ``item`` and ``user``; a ``.json`` beside it says how it was made).
        layer: the encoder layer (-1: the final one).
        dim: code width.
        proxy: ``bce`` on (user, item, label) pairs, or ``contrastive`` over the liked pairs.
        matcher: the matching network: a deeper ``mlp`` or a ``cross`` network.
        keep / decouple: weights of -nHSIC(h, z) and nHSIC(z, matcher hidden) (the latter moves the codes only:
            its gradient stops at the matcher, which it would otherwise switch off).
        user_side: users as learned ``id`` embeddings, or their compressed ``text`` representations.
        finetune_layers: fine-tune the encoder's last this many layers on the item texts (0: frozen, cached).
        epochs, seed: training.
        early_stopping: keep the epoch whose proxy loss on the validation split's pairs is lowest (with a
            fine-tuned encoder, its layers of that epoch too); ``false``: the last epoch. On by default: with
            DeepFM, 0 to +0.0025 test AUC over the last epoch's codes before the matcher fix, -0.0008 and +0.0021
            on MovieLens after it (BENCHMARKS.md, MARC).
        cache: hidden-state cache folder (default: ``<out folder>/cache``).
        pooling, max_length: as in ``marc probe``.
        main_label: the label of the pairs (default: the dataset's).
    """
    from dataclasses import asdict

    from recsys.distill.marc import MARCConfig, save_codes, train_marc
    from recsys.distill.marc_data import encode_dataset, main_label_of, training_pairs

    out = Path(out)
    reps = encode_dataset(data, encoder, cache or out.parent / "cache", pooling=pooling, max_length=max_length)
    index = sorted(reps)[layer]
    item_h, user_h = reps[index]
    config = MARCConfig(dim=dim, proxy=proxy, matcher=matcher, keep=keep, decouple=decouple, user_side=user_side,
                        epochs=epochs, seed=seed)
    label = main_label_of(data, main_label)
    encoder_net = None
    if finetune_layers:
        if layer not in (-1, len(reps) - 1):
            raise ValueError("fine-tuning trains the encoder's last layers: use the final layer (--layer -1)")
        from recsys.distill.finetune import TrainableEncoder
        from recsys.distill.marc_data import encoder_folder
        from recsys.distill.text import item_texts

        encoder_net = TrainableEncoder(encoder_folder(encoder), item_texts(data), finetune_layers, pooling=pooling,
                                       max_length=max_length)
    valid = None
    if early_stopping:
        from recsys.data.splits import VALID

        valid = training_pairs(data, label, VALID)
        if valid[0].shape[0] < 2:
            raise ValueError(f"early_stopping needs the validation split's pairs, and {data} has "
                             f"{valid[0].shape[0]}: prepare it with a validation split or pass --early_stopping false")
    model, history = train_marc(item_h, user_h, training_pairs(data, label), config, item_encoder=encoder_net,
                                valid=valid)
    if encoder_net is not None:
        item_h = encoder_net.encode_all()
    save_codes(model.codes(item_h, user_h), out, {"method": "marc", "data": str(data), "encoder": str(encoder),
                                                 "layer": index, "finetune_layers": finetune_layers, "main_label": label,
                                                 "config": asdict(config),
                                                 "history": history})
    print(f"wrote {out}: item and user codes of width {dim} from layer {index}; last epoch {history[-1]}")


def plan(
    *,
    train_config: Path,
    world_size: int = 2,
    device: Literal["cpu", "cuda"] = "cpu",
    local_world_size: int | None = None,
    sharding: dict[str, str] | None = None,
    overrides: list[str] | None = None,
) -> None:
    """Print torchrec's sharding plan of a training config's model on ``world_size`` devices.

    The model is built as ``recsys fit --config TRAIN_CONFIG`` would build it (its data must be prepared, for the
    vocabulary sizes); ``sharding`` forces types per table like ``--trainer.strategy.sharding``, e.g.
    ``--sharding '{item: row_wise}'``; ``overrides`` are more ``recsys fit`` arguments, e.g.
    ``--overrides '[--data.init_args.data, data/kr]'``.
    """
    from recsys.fit import build_model
    from recsys.models.sharding import describe_plan, embedding_tables, plan_sharding

    model = build_model(["--config", str(train_config), *(overrides or [])])
    tables = embedding_tables(model)
    result = plan_sharding(model, world_size, sharding=sharding, device=device, local_world_size=local_world_size)
    print(f"{len(tables)} embedding tables ({', '.join(f'{t}: {n:,} rows' for t, n in tables.items())}) "
          f"on {world_size} {device} devices:")
    print(describe_plan(result))


def checkpoint_consolidate(*, checkpoint: Path, out: Path) -> None:
    """Write a sharded checkpoint folder (``--trainer.strategy torchrec``) as one plain checkpoint file
    with whole tables: what ``recsys export`` and single-process tools read."""
    from recsys.models.sharded_checkpoint import consolidate

    if out.exists():
        raise FileExistsError(f"{out} exists; choose another --out")
    consolidate(checkpoint, out)
    print(f"wrote {out}")


COMMANDS = {
    "data": {"prepare": data_prepare, "synth": data_synth},
    "distill": {"diet": distill_diet, "baseline": distill_baseline, "compare": distill_compare},
    "marc": {"probe": marc_probe, "train": marc_train},
    "quickstart": quickstart,
    "bench-optim": bench_optim,
    "export": export,
    "serve-bench": serve_bench,
    "plan": plan,
    "checkpoint": {"consolidate": checkpoint_consolidate},
}


LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def main(argv: list[str] | None = None) -> int:
    from jsonargparse import CLI

    from recsys.data.errors import DataError

    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in LIGHTNING_SUBCOMMANDS:
        from recsys.fit import main as lightning_main

        lightning_main(args)  # Lightning's CLI: exits non-zero itself on bad arguments
        return 0
    try:
        CLI(COMMANDS, args=args, as_positional=False)
    except (DataError, ValueError, FileExistsError, FileNotFoundError) as e:  # ArtifactError is a ValueError
        print(f"recsys: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
