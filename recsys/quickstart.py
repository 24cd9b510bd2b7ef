"""``recsys quickstart``: the whole pipeline on an embedded default, offline, in a few minutes on 2 CPU cores.

1. synthesize a small KuaiRand-Pure-format release (the real file names and formats, with planted
   per-topic engagement styles that drive which actions follow a click and how long a video is watched);
2. prepare it (``recsys data prepare``);
3. build action chains (click -> like / follow / comment / forward -> Leave) and train A2Gen, the
   action-aware generative ranker, with a progress bar, keeping the best checkpoint by validation AUC;
   PLE, the multi-task baseline A2Gen replaced online, trains beside it with the same recipe;
4. evaluate both on the test period (2022-04-29..05-08) and print per-action AUC and Leave-time MAE.
"""

from __future__ import annotations

import time
from pathlib import Path


def run(*, out: Path, users: int = 2000, items: int = 1500, epochs: int = 2, seed: int = 0) -> dict[str, dict[str, float]]:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from recsys.data.chain_ranking import ChainDataModule
    from recsys.data.demo import demo_dataset
    from recsys.metrics.table import format_table
    from recsys.models.a2gen import A2GenModule
    from recsys.models.ple import PLE

    started = time.perf_counter()
    out = Path(out)
    prepared, manifest = demo_dataset(out, users=users, items=items, seed=seed, log=lambda m: print(f"[1/4] {m}"))
    print(f"[2/4] prepared {manifest.rows['events']:,} events ({manifest.rows['duplicates_dropped']:,} exact "
          f"duplicates dropped), {manifest.vocab_sizes['user'] - 1:,} users, {manifest.vocab_sizes['item'] - 1:,} items "
          f"-> {prepared}")
    data = ChainDataModule(prepared, max_len=30, batch_size=256, seed=seed)
    data.setup()
    spec = data.spec
    print(f"[3/4] {len(data.samples('train')):,} training chains (click -> {', '.join(spec.actions)} -> {spec.terminal})")
    rows: dict[str, dict[str, float]] = {}
    for name, cls in (("A2Gen", A2GenModule), ("PLE", PLE)):
        L.seed_everything(seed, verbose=False)
        model = cls(data.feature_cardinalities, data.spec_dict, lr=3e-3, muon_lr=5e-3)
        checkpoint = ModelCheckpoint(monitor="val/auc_mean", mode="max", filename="best")
        trainer = L.Trainer(max_epochs=epochs, val_check_interval=0.5, accelerator="cpu",
                            logger=CSVLogger(out, name=f"logs-{name.lower()}"), callbacks=[checkpoint],
                            enable_model_summary=False)
        print(f"      training {name} ({sum(p.numel() for p in model.parameters()):,} parameters, MuonRec)")
        trainer.fit(model, data)
        result = trainer.test(model, data, ckpt_path=checkpoint.best_model_path or None, verbose=False)[0]
        rows[name] = {k.removeprefix("test/"): float(v) for k, v in result.items()}
    columns = [f"auc/{a}" for a in spec.actions] + [f"mae/{spec.terminal}"]
    print(f"\n[4/4] test period, {len(data.samples('test')):,} clicked impressions: per-action AUC, and the mean "
          f"absolute error of the predicted Leave time (fraction of the video):\n")
    print(format_table(rows, columns=columns, index="model"))
    print(f"\nlogs and checkpoints: {out}\ntotal {time.perf_counter() - started:.0f} s")
    return rows
