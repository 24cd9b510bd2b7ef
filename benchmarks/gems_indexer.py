"""GEMs' mid-term indexer vs brute-force cross-attention over a 5,000-event mid-term stream (issue #5 §6).

One GEMs model is trained with the paper's mid-term window of 5,000 events (recent 64, lifecycle the rest)
through the three-stage schedule (dense; plus the indexer's KL loss; top-K), on a synthetic
KuaiRand-1K-format release with long click histories (every user has well over 5,000 clicks before the
test period). The same trained model then serves the test users two ways, side by side:

* **brute force**: every decoder query attends to all 5,000 mid-term keys (stage 1);
* **indexer**: the lightning indexer picks each query's top-K keys and attention reads only those
  (stage 3), for several K;
* **indexer, shared**: at each beam-search step a user's beams pick K keys together (each key's best
  indexer score over them, :mod:`recsys.models.shared_index`: our serving choice) and all read those;
  the first step (one query per user) keeps its own top-``--train-top-k``.

Reported: Recall@K / NDCG@10 on the test samples, and the latency of one user's request (beam width 100),
split into encoding the streams (the same for both) and the beam search (where they differ), median over
users. Paper (PAPERS.md §2): 32 ms vs 104 ms at equal recall. Target: >= 2x faster, recall within 1%.

    .venv/bin/python benchmarks/gems_indexer.py [--epochs 4] [--top-k 64 256 1024] [--shared-top-k 512 1024]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import lightning as L
import torch

from recsys.data.demo import demo_dataset
from recsys.data.lifelong import LifelongDataModule
from recsys.metrics.ranking import metrics_from_rank
from recsys.models.beam_search import constrained_beam_search
from recsys.models.gems_module import GEMsModule

DATA = {"dataset": "kuairand-1k", "users": 150, "items": 6000, "rows_per_user_day": 800.0, "activity_sigma": 0.0}
RECENT, MID, BEAMS, KS = 64, 5000, 100, (10, 50, 100)


@torch.no_grad()
def evaluate(module: GEMsModule, dm: LifelongDataModule, stage: int) -> tuple[dict[str, float], torch.Tensor]:
    """Test metrics and each test sample's rank of its target (``BEAMS`` when not returned)."""
    module.eval()
    sums: dict[str, float] = {}
    ranks = []
    for batch in dm.test_dataloader():
        items, _, _ = module.recommend(batch, BEAMS, stage=stage)
        hit = items == batch.targets[:, None]
        rank = torch.where(hit.any(1), hit.float().argmax(1), torch.full_like(batch.targets, items.shape[1]))
        for k, v in metrics_from_rank(rank, KS).items():
            sums[k] = sums.get(k, 0.0) + float(v.sum())
        ranks.append(rank)
    ranks = torch.cat(ranks)
    return {k: v / len(ranks) for k, v in sums.items()}, ranks


def discordant(base: torch.Tensor, other: torch.Tensor, k: int) -> str:
    """Paired view of a recall@k difference: test samples hit only by brute force / only by ``other``."""
    a, b = base < k, other < k
    return f"{int((a & ~b).sum())} / {int((b & ~a).sum())}"


@torch.no_grad()
def latency(module: GEMsModule, dm: LifelongDataModule, stage: int, users: int) -> tuple[float, float]:
    """Median (encode ms, beam search ms) of one-user requests."""
    samples = dm.samples("test")
    model, trie = module.model, module.trie
    encode_ms, search_ms = [], []
    for i in range(0, len(samples), max(len(samples) // users, 1)):
        batch = samples.__getitems__([i])
        started = time.perf_counter()
        memories = model.encode(batch.features, batch.ages, batch.actions, plays=batch.plays)
        memory_kv = model.memory_kv(memories)
        encoded = time.perf_counter()

        def step(prefix: torch.Tensor, state: dict):
            return model.step(prefix, state, memories, memory_kv, prefix.shape[0], stage)  # one user

        constrained_beam_search(step, 1, len(module.codebook_sizes), module.codebook_sizes, BEAMS, trie, state={},
                                first_step_per_row=True)
        done = time.perf_counter()
        encode_ms.append(1000 * (encoded - started))
        search_ms.append(1000 * (done - encoded))
    return statistics.median(encode_ms), statistics.median(search_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-top-k", type=int, default=256)
    parser.add_argument("--top-k", type=int, nargs="*", default=[64, 256, 1024])
    parser.add_argument("--shared-top-k", type=int, nargs="*", default=[512, 1024])
    parser.add_argument("--latency-users", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users", type=int, default=DATA["users"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "_work" / "gems_indexer")
    args = parser.parse_args()
    prepared, manifest = demo_dataset(args.out, log=print, **{**DATA, "users": args.users})
    L.seed_everything(args.seed, verbose=False)
    dm = LifelongDataModule(prepared, recent=RECENT, mid=MID, eval_per_user=5, max_train_per_user=30, batch_size=32,
                            eval_batch_size=16, sid_levels=3, sid_codebook=32, seed=args.seed)
    dm.setup()
    test = dm.samples("test")
    full_mid = float((test.targets - dm._seq.offsets[:-1][test.owner] - RECENT >= MID).mean())
    ckpt = args.out / f"model-u{args.users}-e{args.epochs}-k{args.train_top_k}-s{args.seed}.ckpt"
    if ckpt.exists():  # a trained model of the same settings: re-measure without re-training
        module = GEMsModule.load_from_checkpoint(ckpt, weights_only=False)  # our own file
        train_s = json.loads(ckpt.with_suffix(".json").read_text())["train_s"]
    else:
        module = GEMsModule(dm.semantic_ids_path, dm.feature_cardinalities, dim=64, heads=4, layers=2,
                            encoder_layers=2, recent=RECENT, top_k=args.train_top_k, stage_epochs=[1, 1],
                            beam_width=BEAMS, ks=list(KS))
        started = time.perf_counter()
        trainer = L.Trainer(max_epochs=args.epochs, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                            num_sanity_val_steps=0)
        trainer.fit(module, dm)
        train_s = time.perf_counter() - started
        trainer.save_checkpoint(ckpt)
        ckpt.with_suffix(".json").write_text(json.dumps({"train_s": train_s}))
    print(f"trained {args.epochs} epochs in {train_s:.0f} s", flush=True)

    rows = [("brute force (all 5,000 keys)", 1, None, None)] + [(f"indexer top-{k}", 3, k, None) for k in args.top_k]
    rows += [(f"indexer, beams share top-{k}", 3, args.train_top_k, k) for k in args.shared_top_k]
    results = []
    for name, stage, k, shared_k in rows:
        if k is not None:
            module.model.config.top_k = k
        module.model.config.shared_top_k = shared_k
        metrics, ranks = evaluate(module, dm, stage)
        enc, search = latency(module, dm, stage, args.latency_users)
        results.append((name, metrics, enc, search, ranks))
        print(name, {m: round(v, 4) for m, v in metrics.items()}, f"encode {enc:.1f} ms, search {search:.1f} ms",
              flush=True)
    base = results[0]
    lines = [
        f"Data: {manifest.rows['events']:,} events, {manifest.vocab_sizes['user'] - 1} users, "
        f"{manifest.vocab_sizes['item'] - 1:,} items; {len(test):,} test samples, {full_mid:.0%} of them with a full "
        f"{MID:,}-event mid-term stream. Trained {args.epochs} epochs (top-{args.train_top_k} from epoch 3) in "
        f"{train_s:.0f} s; torch {torch.__version__}, {torch.get_num_threads()} threads; latency: median of "
        f"{args.latency_users} one-user requests, beam width {BEAMS}.",
        "",
        "| mid-term attention | recall@10 | recall@50 | recall@100 | ndcg@10 | recall@100 vs brute force "
        "| hit@10 / hit@100 only by brute force / only by this | encode (ms) | beam search (ms) | request (ms) "
        "| speed-up (search / request) |",
        "| :-- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for name, m, enc, search, ranks in results:
        rel = m["recall@100"] / base[1]["recall@100"] - 1 if base[1]["recall@100"] else float("nan")
        lines.append(f"| {name} | {m['recall@10']:.4f} | {m['recall@50']:.4f} | {m['recall@100']:.4f} | "
                     f"{m['ndcg@10']:.4f} | {rel:+.1%} | "
                     f"{discordant(base[4], ranks, 10)}, {discordant(base[4], ranks, 100)} | "
                     f"{enc:.1f} | {search:.1f} | {enc + search:.1f} | "
                     f"{base[3] / search:.2f}x / {(base[2] + base[3]) / (enc + search):.2f}x |")
    text = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
