"""Ranking samples: labels are the action bits, histories hold only earlier positives (never the same
request or day), negatives carry zero labels, and every id fits its feature's cardinality."""

from __future__ import annotations

import numpy as np
import torch

from recsys.data.prepared import PreparedDataset
from recsys.data.ranking import RankingDataModule


def whole(dm: RankingDataModule, stage: str):
    samples = dm.samples(stage)
    return samples, samples.__getitems__(list(range(len(samples))))


def test_labels_histories_and_cardinalities(prepared_kuairand):
    dm = RankingDataModule(prepared_kuairand, positive="click", max_len=8)
    samples, batch = whole(dm, "valid")
    t = dm.tables
    e = samples.events
    bits = t.actions[e]
    for a in range(len(dm.actions)):
        assert torch.equal(batch.labels[:, a], torch.from_numpy(((bits >> a) & 1).astype(np.float32)))
    hist = batch.features["history"]
    offsets = hist.offsets().numpy()
    values = hist.values().numpy()
    clicked = (t.actions & 1) != 0
    for i in range(0, len(e), 11):
        ev = e[i]
        same_user = np.flatnonzero(t.user == t.user[ev])
        earlier = same_user[(t.ts[same_user] < t.ts[ev]) & clicked[same_user]]
        assert values[offsets[i]:offsets[i + 1]].tolist() == t.item[earlier][-8:].tolist()
    for key, card in dm.feature_cardinalities.items():
        v = batch.features[key].values()
        assert v.numel() == 0 or (int(v.min()) >= 0 and int(v.max()) < card), key
    assert set(dm.feature_cardinalities) >= {"user", "item", "author", "tags", "tab", "hour", "history"}


def test_tmall_negatives_have_zero_labels(prepared_tmall):
    dm = RankingDataModule(prepared_tmall, negatives=2, max_len=5, seed=1)
    samples, batch = whole(dm, "train")
    assert len(samples) == 3 * samples.events.shape[0]
    labels = batch.labels.reshape(-1, 3, len(dm.actions))
    assert (labels[:, 0].sum(-1) >= 1).all()  # every Tmall event has an action
    assert (labels[:, 1:] == 0).all()
    items = batch.features["item"].values().reshape(-1, 3)
    users = batch.users.reshape(-1, 3)
    assert (users[:, 1:] == users[:, :1]).all()
    assert (items[:, 1:] != items[:, :1]).float().mean() > 0.9
    # same-day events never see each other: history ends before the first event of the day
    t = dm.tables
    day_start = t.ts[samples.events]
    ends = t.history_end[samples.events]
    has = ends > t.history_begin[samples.events]
    pos_ts = t.ts[(t.actions != 0)]
    assert has.mean() > 0.5 and (pos_ts[ends[has] - 1] < day_start[has]).all()
    again = RankingDataModule(prepared_tmall, negatives=2, max_len=5, seed=1)
    assert torch.equal(whole(again, "train")[1].features.values(), batch.features.values())
