"""How much a model *can* gain from the long-term interest: recall of two oracles on the GEMs test targets.

The synthetic release's planted process (:mod:`recsys.data.synth.latent`) says exactly how likely every item
is to be a user's next click on a given day: exposure ``P_u,t(topic_i) * w_i`` times click probability
``sigmoid(click_bias + affinity_scale * <P_u,t @ C, v_i>)``. Ranking the catalogue by that is the best any
model can do on a target (Bayes-optimal recall@K). Two oracles on the test targets of
``benchmarks/gems_results.py --data periodic`` (a user's first 5 test-period clicks; the test period starts
with the dormant topic's return):

* **knows the return**: the day's true mixture ``P_u,t``, dormant topic included;
* **blind to the return**: the same mixture with the dormant topic's share removed (renormalized), so also
  its interest vector: everything a model could know from the ordinary, recent interests, even the day's
  drift, but not that an old interest comes back.

The gap between them is the headroom the long streams have over a recent-window model on this data, per K
and per target group (``gems_returning.target_groups``). If it is small at some K, no model can show a
clear gain there, whatever its architecture: a test of "GEMs beats recent-only" needs data where it is not.

    .venv/bin/python benchmarks/gems_oracle.py [--users 300] [--set dormant_share=0.5 ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from recsys.data.demo import demo_dataset
from recsys.data.synth import make_config
from recsys.data.synth.kuairand import KuaiRandTruth, kuairand_truth
from recsys.data.synth.latent import sigmoid
from recsys.data.vocab import Vocab

from gems_results import PERIODIC, TEST_KS, data_module  # noqa: I001 (sibling scripts)
from gems_returning import target_groups


def oracle_ranks(truth: KuaiRandTruth, user: np.ndarray, day: np.ndarray, target: np.ndarray,
                 knows_return: bool) -> np.ndarray:
    """0-based rank of each target item under the planted click probabilities of (user, day)."""
    cfg = truth.config
    p = truth.daily_topic_probs[user, day].astype(np.float64)  # (n, K)
    if not knows_return:
        p[np.arange(len(user)), truth.dormant_topic[user]] = 0.0
        p /= p.sum(1, keepdims=True)
    interest = p @ truth.topic_centroids  # (n, dim)
    click = sigmoid(cfg.click_bias + cfg.affinity_scale * interest @ truth.item_factors.T)  # (n, items)
    score = p[:, truth.item_topic] * truth.item_weight[None, :] * click
    own = score[np.arange(len(user)), target]
    return (score > own[:, None]).sum(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / "_work" / "gems_det")
    parser.add_argument("--users", type=int, default=PERIODIC["users"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="generator overrides on top of gems_results.py's periodic release")
    args = parser.parse_args()
    extra = {k: float(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    data = {**PERIODIC, "users": args.users, **extra}
    prepared, _ = demo_dataset(args.work, log=print, **data)
    overrides = {k: v for k, v in data.items() if k not in ("dataset", "users", "items")}
    truth = kuairand_truth(make_config(data["dataset"], data["users"], data["items"], None, 0, **overrides))
    item_raw = Vocab.read(prepared / "vocab", "item").raw.to_numpy()
    user_raw = Vocab.read(prepared / "vocab", "user").raw.to_numpy()
    dm = data_module(prepared, 0, "spread")
    dm.setup()
    test = dm.samples("test")
    target = item_raw[dm._seq.item[test.targets].astype(np.int64) - 1]
    user = user_raw[dm._seq.users[test.owner].astype(np.int64) - 1]
    day = truth.day_of_time_ms(dm._seq.ts[test.targets])
    on = truth.daily_topic_probs[user, day, truth.dormant_topic[user]] > 0
    print(f"{len(target)} test targets; days {np.unique(day).tolist()}; dormant topic active at {on.mean():.1%}")
    groups = target_groups(dm, truth, item_raw, user_raw)
    ranks = {name: oracle_ranks(truth, user, day, target, knows) for name, knows in
             (("knows the return", True), ("blind to the return", False))}
    lines = [f"Oracle recall, {data}", "", "| oracle | group (share) | " + " | ".join(f"@{k}" for k in TEST_KS) + " |",
             "| :-- | :-- |" + " --: |" * len(TEST_KS)]
    for group, mask in groups.items():
        for name, r in ranks.items():
            lines.append(f"| {name} | {group} ({mask.mean():.1%}) | "
                         + " | ".join(f"{(r[mask] < k).mean():.4f}" for k in TEST_KS) + " |")
    text = "\n".join(lines)
    print(text)


if __name__ == "__main__":
    main()
