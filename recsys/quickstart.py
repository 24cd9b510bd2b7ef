"""``recsys quickstart``: the whole pipeline on an embedded default, offline, in a few minutes on 2 CPU cores.

1. synthesize a small KuaiRand-Pure-format release (the real file names and formats);
2. prepare it (``recsys data prepare``);
3. train the SASRec-style next-item baseline on clicks, with a progress bar, keeping the best checkpoint
   by validation NDCG@10;
4. evaluate on the test period by ranking the full catalogue, next to a popularity baseline on exactly
   the same test samples, and print the table.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch


def run(*, out: Path, users: int = 5000, items: int = 3000, epochs: int = 8, seed: int = 0) -> dict[str, dict[str, float]]:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from recsys.data.demo import demo_dataset
    from recsys.data.retrieval import RetrievalDataModule
    from recsys.metrics import RankingMetrics
    from recsys.metrics.table import format_table
    from recsys.models.sasrec_module import SASRecModule

    started = time.perf_counter()
    out = Path(out)
    prepared, manifest = demo_dataset(out, users=users, items=items, seed=seed, log=lambda m: print(f"[1/4] {m}"))
    print(f"[2/4] prepared {manifest.rows['events']:,} events ({manifest.rows['duplicates_dropped']:,} exact "
          f"duplicates dropped), {manifest.vocab_sizes['user'] - 1:,} users, {manifest.vocab_sizes['item'] - 1:,} items "
          f"-> {prepared}")

    L.seed_everything(seed, verbose=False)
    data = RetrievalDataModule(prepared, positive="click", max_len=50, batch_size=128, eval_batch_size=512, seed=seed)
    model = SASRecModule(data.num_items, dim=64, num_layers=2, num_heads=2, max_len=50, dropout=0.2, lr=2e-3)
    checkpoint = ModelCheckpoint(monitor="val/ndcg@10", mode="max", filename="best")
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=CSVLogger(out, name="logs"),
        callbacks=[checkpoint],
        enable_model_summary=False,
        deterministic=True,
    )
    print(f"[3/4] training SASRec on {len(data.samples('train')):,} click windows for {epochs} epochs")
    trainer.fit(model, data)
    test = trainer.test(model, data, ckpt_path=checkpoint.best_model_path or None, verbose=False)[0]

    # Popularity: every test sample gets the same scores, the items' training-period click counts.
    popularity = RankingMetrics(ks=model.hparams.ks)
    counts = torch.from_numpy(data.train_item_counts.astype(np.float32))
    counts[0] = float("-inf")
    for batch in data.test_dataloader():
        popularity.update(counts.expand(batch.batch_size, -1), batch.targets)
    pop = {k: float(v) for k, v in popularity.compute().items()}
    rows = {
        "SASRec": {k.removeprefix("test/"): float(v) for k, v in test.items()},
        "Popularity": pop,
    }
    columns = ["hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr"]
    print(f"\n[4/4] test period (2022-04-29..05-08), {len(data.samples('test')):,} users' next click, "
          f"ranked against all {data.num_items - 1:,} items:\n")
    print(format_table(rows, columns=columns, index="model"))
    print(f"\nbest checkpoint: {checkpoint.best_model_path}\nlogs: {trainer.logger.log_dir}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return rows
