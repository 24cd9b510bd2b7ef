"""Where GEMs' long streams help: test recall split by whether the target returns a long-term interest.

Reads the checkpoints that ``benchmarks/gems_results.py --data periodic --train-targets spread`` trained (one
per variant and seed; nothing is retrained) and the synthetic release's planted truth
(:func:`recsys.data.synth.kuairand.kuairand_truth`): every user has one *dormant* topic that comes back
after 7 absent days, and the test period starts with such a return. The test targets (a user's first 5 clicks of the test period)
fall in three groups:

* **returning, unseen**: an item of the user's dormant topic, and no event of that topic in the recent
  window (32 events): the interest shows only in the mid-term and lifecycle streams (its last clicks are
  8-10 days old). Only here can the long streams know something the recent one cannot;
* **returning, seen**: of the dormant topic, but an earlier click of the test day already put the topic
  into the recent window;
* **other**: an item of the user's ordinary topics.

Recall@K (beam width 500, the checkpoint's own training stage, as ``gems_results.py`` tests it) per group.
Every (variant, seed)'s ranks are cached in ``<work>/ranks/``: a rerun only regroups.

    .venv/bin/python benchmarks/gems_returning.py [--work benchmarks/_work/gems_det] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from recsys.data.demo import demo_dataset
from recsys.data.synth import make_config
from recsys.data.synth.kuairand import kuairand_truth
from recsys.data.vocab import Vocab
from recsys.metrics.ranking import metrics_from_rank
from recsys.models.gems_module import GEMsModule, stage_of_epoch

from gems_results import PERIODIC, TEST_BEAM, TEST_KS, VARIANTS, data_module  # noqa: I001 (a sibling script)


@torch.no_grad()
def ranks(module: GEMsModule, dm, stage: int) -> np.ndarray:
    """Rank of every test target in the beam's list (``TEST_BEAM`` when absent), in test-sample order."""
    module.eval()
    out = []
    for batch in dm.test_dataloader():
        items, _, _ = module.recommend(batch, TEST_BEAM, stage=stage)
        hit = items == batch.targets[:, None]
        out.append(torch.where(hit.any(1), hit.float().argmax(1), torch.full_like(batch.targets, TEST_BEAM)))
    return torch.cat(out).numpy()


def target_groups(dm, truth, item_raw: np.ndarray, user_raw: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks over the test samples (in order): returning unseen / returning seen / other / all."""
    test = dm.samples("test")
    target_item = item_raw[dm._seq.item[test.targets].astype(np.int64) - 1]
    user = user_raw[dm._seq.users[test.owner].astype(np.int64) - 1]
    dormant = truth.dormant_topic[user]
    returning = truth.item_topic[target_item] == dormant
    seen = np.zeros_like(returning)
    for j, (t, o) in enumerate(zip(test.targets, test.owner)):
        lo = max(int(dm._seq.offsets[o]), int(t) - dm.hparams.recent)
        window = item_raw[dm._seq.item[lo:t].astype(np.int64) - 1]
        seen[j] = bool((truth.item_topic[window] == dormant[j]).any())
    return {"returning, unseen": returning & ~seen, "returning, seen": returning & seen,
            "other": ~returning, "all": np.ones_like(returning)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / "_work" / "gems_det")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tag", default="periodic-spread", help="checkpoint folder tag (without the seed)")
    parser.add_argument("--users", type=int, default=PERIODIC["users"], help="gems_results.py's --users")
    args = parser.parse_args()
    data = {**PERIODIC, "users": args.users}
    prepared, _ = demo_dataset(args.work, log=print, **data)  # gems_results.py's release (already there)
    overrides = {k: v for k, v in data.items() if k not in ("dataset", "users", "items")}
    truth = kuairand_truth(make_config(data["dataset"], data["users"], data["items"], None, 0, **overrides))
    item_raw = Vocab.read(prepared / "vocab", "item").raw.to_numpy()
    user_raw = Vocab.read(prepared / "vocab", "user").raw.to_numpy()

    per: dict[str, dict[str, list[float]]] = {}
    shares = []
    for seed in args.seeds:
        dm = data_module(prepared, seed, "spread")
        dm.setup()
        groups = target_groups(dm, truth, item_raw, user_raw)
        shares.append({g: float(m.mean()) for g, m in groups.items()})
        for variant in VARIANTS:
            path = args.work / "ckpt" / variant / f"{args.tag}-{seed}" / "best.ckpt"
            if not path.exists():
                continue
            cached = args.work / "ranks" / f"{variant}-{args.tag}-{seed}.npy"
            if not cached.exists():
                module = GEMsModule.load_from_checkpoint(path, weights_only=False)  # our own file
                stage = stage_of_epoch(module.checkpoint_epoch, module.hparams.stage_epochs)  # as trainer.test
                cached.parent.mkdir(parents=True, exist_ok=True)
                np.save(cached, ranks(module, dm, stage))
            r = torch.from_numpy(np.load(cached))
            for group, mask in groups.items():
                m = metrics_from_rank(r[torch.from_numpy(mask)], list(TEST_KS))
                for k in TEST_KS:
                    per.setdefault(variant, {}).setdefault(f"{group} recall@{k}", []).append(float(m[f"recall@{k}"].mean()))
            print(seed, variant, {k: round(v[-1], 4) for k, v in per[variant].items()}, flush=True)

    def fmt(v: list[float]) -> str:
        return f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"

    lines = ["Share of the test targets per group (mean over seeds "
             f"{args.seeds}): " + ", ".join(f"{g} {statistics.mean(x[g] for x in shares):.1%}" for g in shares[0]), ""]
    for group in shares[0]:
        lines += [f"**{group} targets**", "", "| model | " + " | ".join(f"recall@{k}" for k in TEST_KS) + " |",
                  "| :-- |" + " --: |" * len(TEST_KS)]
        for variant, cols in per.items():
            lines.append(f"| {variant} | " + " | ".join(fmt(cols[f'{group} recall@{k}']) for k in TEST_KS) + " |")
        lines.append("")
    text = "\n".join(lines)
    (args.work / f"returning-{args.tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
