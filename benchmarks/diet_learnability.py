"""How much of a synthetic KuaiRand-format stream's planted structure a model can learn (issue #8 Sec. 3).

A zoo's full-data ranking can only reproduce across training seeds if its configurations differ by more
than their seed noise, and they can only differ if the stream holds structure the models learn. This
script scores the test chains' main label (like) with:

* the planted truth (:func:`recsys.data.synth.kuairand.kuairand_truth`): the daily affinity
  ``<I_u,t, v_i>``, the same plus the user's action style on the item's topic (the logit terms the
  generator uses), and the long-run taste ``<softmax(base_u) C, v_i>`` (no drift: the most a model of
  static user and item factors could know);
* model-free: the user's training like rate (who likes, constant within a user: GAUC 0.5);
* a plain-PyTorch matrix factorization (user and item ids, biases, ``--mf-epochs`` epochs of Adam on the
  training chains): what ids alone teach on this much data.

    .venv/bin/python benchmarks/diet_learnability.py --users 3000 --synth rows_per_user_day=8

Data comes from (and is cached under) ``--out`` exactly as ``diet_ranking.py`` makes it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from diet_ranking import ROOT, parse_synth
from torch import nn

from recsys.data.chain_ranking import ChainTables
from recsys.data.demo import demo_dataset
from recsys.data.prepared import PreparedDataset
from recsys.data.synth import make_config
from recsys.data.synth.kuairand import kuairand_truth
from recsys.data.vocab import Vocab
from recsys.metrics import auc, gauc


def raw_ids(data: Path, field: str, ids: np.ndarray) -> np.ndarray:
    """A prepared dataset's ids of ``field`` as the raw ids the synthetic truth speaks (prepared ids are
    vocabulary positions + 1)."""
    return Vocab.read(data / "vocab", field).raw.to_numpy().astype(np.int64)[np.asarray(ids).astype(np.int64) - 1]


class MatrixFactorization(nn.Module):
    """``<p_u, q_i> + b_u + b_i + b``: the id-only reference."""

    def __init__(self, users: int, items: int, dim: int = 16) -> None:
        super().__init__()
        self.p, self.q = nn.Embedding(users, dim), nn.Embedding(items, dim)
        self.bu, self.bi = nn.Embedding(users, 1), nn.Embedding(items, 1)
        self.b = nn.Parameter(torch.zeros(()))
        for e in (self.p, self.q):
            nn.init.normal_(e.weight, std=0.05)
        for e in (self.bu, self.bi):
            nn.init.zeros_(e.weight)

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return (self.p(u) * self.q(i)).sum(-1) + self.bu(u)[:, 0] + self.bi(i)[:, 0] + self.b


def fit_mf(users: torch.Tensor, items: torch.Tensor, y: torch.Tensor, train: np.ndarray, epochs: int,
           seed: int) -> MatrixFactorization:
    torch.manual_seed(seed)
    model = MatrixFactorization(int(users.max()) + 1, int(items.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(epochs):
        for batch in np.array_split(np.random.default_rng(seed + epoch).permutation(train), max(len(train) // 512, 1)):
            r = torch.from_numpy(batch)
            loss = nn.functional.binary_cross_entropy_with_logits(model(users[r], items[r]), y[r])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=10000)
    p.add_argument("--items", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synth", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--mf-epochs", type=int, default=6)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "_work" / "diet")
    args = p.parse_args()
    synth = parse_synth(args.synth, p)
    data, _ = demo_dataset(args.out / "data", dataset="kuairand-pure", users=args.users, items=args.items,
                           seed=args.seed, log=lambda s: None, **synth)
    cfg = make_config("kuairand-pure", args.users, args.items, None, args.seed, **synth)
    truth = kuairand_truth(cfg)
    chains = ChainTables(PreparedDataset(data), None).chains
    main_col = list(chains.spec.actions).index("like")
    like = torch.from_numpy(np.asarray(chains.occurred)[:, main_col].astype(np.float32))
    users = torch.from_numpy(chains.user.astype(np.int64))
    items = torch.from_numpy(chains.item.astype(np.int64))
    train, test = np.flatnonzero(chains.split == 0), np.flatnonzero(chains.split == 2)
    raw_user, raw_item = raw_ids(Path(data), "user", chains.user[test]), raw_ids(Path(data), "item", chains.item[test])
    day = truth.day_of_time_ms(chains.start[test])
    daily = truth.affinity(raw_user, raw_item, day)
    style = truth.user_style[raw_user, truth.item_topic[raw_item]]
    u_train, n_users = users[train], int(users.max()) + 1  # a user may have test chains only
    likes = torch.bincount(u_train, like[train], minlength=n_users)
    rate = likes / torch.bincount(u_train, minlength=n_users).clamp(min=1)
    mf = fit_mf(users, items, like, train, args.mf_epochs, args.seed)
    t = torch.from_numpy(test)
    with torch.no_grad():
        scores = {
            "truth: daily affinity": torch.from_numpy(daily),
            "truth: daily affinity + action style":
                torch.from_numpy(cfg.affinity_scale * daily + cfg.style_strength * style),
            "truth: long-run taste (no drift)": torch.from_numpy(truth.affinity(raw_user, raw_item)),
            "user's training like rate": rate[users[t]],
            f"matrix factorization ({args.mf_epochs} epochs)": mf(users[t], items[t]),
        }
    y, groups = like[t].long(), users[t]
    print(f"{data.name}: {len(train):,} training chains, {len(test):,} test chains, like rate "
          f"{float(like[train].mean()):.3f} / {float(like[t].mean()):.3f} (train / test)\n")
    print("| score | test AUC | test GAUC |\n|---|---|---|")
    for name, s in scores.items():
        print(f"| {name} | {float(auc(s.double(), y)):.4f} | {float(gauc(s.double(), y, groups)):.4f} |")


if __name__ == "__main__":
    main()
