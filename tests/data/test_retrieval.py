"""Next-item retrieval samples: windows cover the training positives exactly, evaluation histories are
the earlier positives, negatives are deterministic, and batches do not depend on the worker count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.data.prepared import PreparedDataset
from recsys.data.retrieval import RetrievalDataModule, positive_sequences
from recsys.data.splits import TRAIN, VALID, leave_last_out


def test_training_windows_cover_every_training_pair_once(prepared_kuairand):
    dm = RetrievalDataModule(prepared_kuairand, positive="click", max_len=7, batch_size=16)
    seq = positive_sequences(PreparedDataset(prepared_kuairand), "click")
    n_train = np.bincount(np.repeat(np.arange(len(seq)), seq.lengths)[seq.split == TRAIN], minlength=len(seq))
    expected_pairs = int(np.maximum(n_train - 1, 0).sum())
    batch = dm.samples("train").__getitems__(list(range(len(dm.samples("train")))))
    jt = batch.features["item"]
    assert int(jt.lengths().sum()) == expected_pairs == batch.targets.shape[0]
    assert int(jt.lengths().max()) <= 7
    # within a window the target at position t is the input at t + 1
    values, offsets = jt.values(), jt.offsets()
    for b in range(batch.batch_size):
        x = values[offsets[b]:offsets[b + 1]]
        y = batch.targets[offsets[b]:offsets[b + 1]]
        assert torch.equal(x[1:], y[:-1])


def test_eval_history_is_everything_before_the_target(prepared_kuairand):
    dm = RetrievalDataModule(prepared_kuairand, positive="click", max_len=5, eval_per_user=2)
    seq = positive_sequences(PreparedDataset(prepared_kuairand), "click")
    samples = dm.samples("valid")
    batch = samples.__getitems__(list(range(len(samples))))
    assert batch.targets.shape[0] == len(samples) > 0
    for i in range(0, len(samples), 7):
        pos = samples.end[i]
        u = samples.owner[i]
        start = seq.offsets[u]
        assert seq.split[pos] == VALID and seq.item[pos] == batch.targets[i]
        expected = seq.item[max(start, pos - 5):pos]
        got = batch.features["item"].values()[batch.features["item"].offsets()[i]:batch.features["item"].offsets()[i + 1]]
        assert got.tolist() == expected.tolist()
    assert np.bincount(samples.owner).max() <= 2


def test_leave_last_out_mode(prepared_tmall):
    dm = RetrievalDataModule(prepared_tmall, split="leave_last_out", max_len=10)
    seq = positive_sequences(PreparedDataset(prepared_tmall), None)
    eligible = int((seq.lengths >= 3).sum())
    assert len(dm.samples("test")) == len(dm.samples("valid")) == eligible
    test = dm.samples("test")
    assert (test.end == seq.offsets[1:][seq.lengths >= 3] - 1).all()
    assert (leave_last_out(seq.offsets)[test.end] == 2).all()


def test_negatives_are_deterministic_and_valid(prepared_kuairand):
    kw = dict(positive="click", max_len=10, batch_size=8, train_negatives=3, sampler="popularity")
    a = next(iter(RetrievalDataModule(prepared_kuairand, **kw).train_dataloader()))
    b = next(iter(RetrievalDataModule(prepared_kuairand, **kw).train_dataloader()))
    assert torch.equal(a.negatives, b.negatives) and torch.equal(a.targets, b.targets)
    num_items = PreparedDataset(prepared_kuairand).num_items
    assert a.negatives.shape == (a.targets.shape[0], 3)
    assert int(a.negatives.min()) >= 1 and int(a.negatives.max()) < num_items


@pytest.mark.parametrize("workers", [2])
def test_batches_do_not_depend_on_workers(prepared_kuairand, workers):
    kw = dict(positive="click", max_len=10, batch_size=64, train_negatives=2, seed=3)
    single = list(RetrievalDataModule(prepared_kuairand, **kw).train_dataloader())
    multi = list(RetrievalDataModule(prepared_kuairand, num_workers=workers, **kw).train_dataloader())
    assert len(single) == len(multi)
    for x, y in zip(single, multi, strict=True):
        assert torch.equal(x.targets, y.targets) and torch.equal(x.negatives, y.negatives)
        assert torch.equal(x.features.values(), y.features.values())
