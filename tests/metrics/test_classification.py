"""AUC, GAUC, LogLoss and the per-action metric table."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from recsys.metrics import (
    MultiActionMetrics,
    auc,
    flatten_metrics,
    gauc,
    group_auc,
    log_loss,
    log_loss_with_logits,
)

# ------------------------------------------------------------------------------------------------
# AUC
# ------------------------------------------------------------------------------------------------


def test_auc_hand_case() -> None:
    # Positives 0.35, 0.8; negatives 0.1, 0.4, 0.6. Ordered pairs: 0.35 > 0.1 (1 of 3), 0.8 > all (3 of 3).
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.6])
    labels = torch.tensor([0, 0, 1, 1, 0])
    assert float(auc(scores, labels)) == pytest.approx(4 / 6)  # 0.6666666666666666


def test_auc_ties_count_half() -> None:
    # Positives 0.5, 0.9; negatives 0.2, 0.5, 0.1: 0.5 beats 2 and ties 1 (2.5), 0.9 beats 3 -> 5.5 / 6.
    scores = torch.tensor([0.2, 0.5, 0.5, 0.9, 0.1])
    assert float(auc(scores, torch.tensor([0, 1, 0, 1, 0]))) == pytest.approx(5.5 / 6)  # 0.9166666666666666
    assert float(auc(torch.zeros(6), torch.tensor([0, 1, 0, 1, 1, 0]))) == pytest.approx(0.5)


def test_auc_single_class_is_nan_without_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(float(auc(torch.tensor([0.2, 0.7]), torch.tensor([1, 1]))))
        assert math.isnan(float(auc(torch.tensor([0.2, 0.7]), torch.tensor([0.0, 0.0]))))
        assert math.isnan(float(auc(torch.zeros(0), torch.zeros(0))))


def test_auc_large_logits_are_not_saturated() -> None:
    # sigmoid(20), sigmoid(25) and sigmoid(30) are all 1.0 in float32; the order must still count.
    logits = torch.tensor([20.0, 30.0, 25.0, -3.0])
    labels = torch.tensor([0, 1, 0, 0])
    assert float(auc(logits, labels)) == pytest.approx(1.0)
    # Logits give the same AUC as the probabilities they stand for.
    x = torch.randn(200, generator=torch.Generator().manual_seed(0))
    y = (torch.rand(200, generator=torch.Generator().manual_seed(1)) < 0.4).long()
    assert float(auc(x, y)) == pytest.approx(float(auc(torch.sigmoid(x.double()), y)), abs=1e-6)


def test_auc_rejects_soft_labels() -> None:
    with pytest.raises(ValueError):
        auc(torch.tensor([0.1, 0.9]), torch.tensor([0.3, 1.0]))


# ------------------------------------------------------------------------------------------------
# GAUC
# ------------------------------------------------------------------------------------------------


def naive_gauc(scores: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> float:
    """Reference: a Python loop over users and explicit pair counting (ties count half)."""
    num = den = 0.0
    for u in groups.unique().tolist():
        s, y = scores[groups == u], labels[groups == u].bool()
        pos, neg = s[y], s[~y]
        if len(pos) == 0 or len(neg) == 0:
            continue
        wins = (pos[:, None] > neg[None, :]).double().sum() + 0.5 * (pos[:, None] == neg[None, :]).double().sum()
        num += len(s) * float(wins) / (len(pos) * len(neg))
        den += len(s)
    return num / den


def test_gauc_hand_case() -> None:
    scores = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.7, 0.4, 0.6])
    labels = torch.tensor([0, 1, 0, 1, 0, 0, 1, 0, 0])
    groups = torch.tensor([10, 10, 10, 20, 20, 20, 20, 30, 30])
    # User 10: positive 0.9 beats both negatives -> AUC 1, 3 samples.
    # User 20: positives 0.3, 0.7 vs negatives 0.7, 0.2: 0.3 -> 1, 0.7 -> 0.5 + 1 = 1.5; 2.5 / 4 = 0.625, 4 samples.
    # User 30: all negative -> excluded.
    # GAUC = (3 * 1 + 4 * 0.625) / (3 + 4) = 5.5 / 7 = 0.7857142857142857
    assert float(gauc(scores, labels, groups)) == pytest.approx(5.5 / 7)
    ids, aucs, sizes = group_auc(scores, labels, groups)
    assert ids.tolist() == [10, 20, 30] and sizes.tolist() == [3, 4, 2]
    assert aucs[:2].tolist() == pytest.approx([1.0, 0.625]) and math.isnan(float(aucs[2]))


def test_gauc_matches_naive_loop_with_ties() -> None:
    g = torch.Generator().manual_seed(2)
    n = 3000
    scores = torch.randint(0, 6, (n,), generator=g).float() / 5  # few distinct values: many ties
    labels = (torch.rand(n, generator=g) < 0.3).long()
    groups = torch.randint(0, 150, (n,), generator=g) * 7 - 300  # sparse, negative and unsorted ids
    assert float(gauc(scores, labels, groups)) == pytest.approx(naive_gauc(scores, labels, groups), abs=1e-6)
    # Per-group values too, and a group's AUC equals the global AUC restricted to it.
    ids, aucs, _ = group_auc(scores, labels, groups)
    u = int(ids[~aucs.isnan()][0])
    sel = groups == u
    assert float(aucs[ids == u]) == pytest.approx(float(auc(scores[sel], labels[sel])), abs=1e-6)


def test_gauc_with_one_group_is_auc_and_degenerate_is_nan() -> None:
    g = torch.Generator().manual_seed(3)
    scores = torch.rand(50, generator=g)
    labels = (torch.rand(50, generator=g) < 0.5).long()
    assert float(gauc(scores, labels, torch.zeros(50, dtype=torch.long))) == pytest.approx(float(auc(scores, labels)))
    # Every user single-class: undefined.
    assert math.isnan(float(gauc(torch.rand(4), torch.tensor([0, 0, 1, 1]), torch.tensor([1, 1, 2, 2]))))


# ------------------------------------------------------------------------------------------------
# LogLoss
# ------------------------------------------------------------------------------------------------


def test_log_loss_hand_case() -> None:
    # -(ln 0.9 + ln 0.8) / 2 = (0.10536051565782628 + 0.2231435513142097) / 2 = 0.16425203348601802
    got = log_loss(torch.tensor([0.9, 0.2]), torch.tensor([1, 0]))
    assert float(got) == pytest.approx(0.16425203348601802, rel=1e-6)


def test_log_loss_clamps_to_eps() -> None:
    wrong = log_loss(torch.tensor([0.0, 1.0]), torch.tensor([1, 0]))
    assert float(wrong) == pytest.approx(-math.log(1e-7), rel=1e-6)  # 16.11809565095832, not inf
    right = log_loss(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    assert 0 < float(right) < 2e-7  # -ln(1 - 1e-7) ~ 1e-7
    # The clamp works for bfloat16 input too (1 - 1e-7 is 1.0 in bfloat16: it must be clamped in float64).
    assert float(log_loss(torch.tensor([1.0]).bfloat16(), torch.tensor([0]))) == pytest.approx(16.1181, abs=1e-3)
    assert float(log_loss(torch.tensor([0.0]), torch.tensor([1]), eps=1e-3)) == pytest.approx(-math.log(1e-3))


def test_log_loss_with_logits() -> None:
    x = torch.tensor([-2.0, 0.5, 3.0, 0.0])
    y = torch.tensor([0, 1, 0, 1])
    assert float(log_loss_with_logits(x, y)) == pytest.approx(float(log_loss(torch.sigmoid(x), y)), rel=1e-6)
    # Exact where the clamped version saturates: -ln(sigmoid(-40)) = 40 + ln(1 + e^-40) ~ 40.
    assert float(log_loss_with_logits(torch.tensor([-40.0]), torch.tensor([1]))) == pytest.approx(40.0)


# ------------------------------------------------------------------------------------------------
# MultiActionMetrics
# ------------------------------------------------------------------------------------------------


def test_multi_action_with_mask() -> None:
    probs = torch.tensor([[0.9, 0.2], [0.1, 0.7], [0.6, 0.4], [0.3, 0.0]])
    labels = torch.tensor([[1, 0], [0, 1], [0, 1], [1, 1]])
    mask = torch.tensor([[1, 1], [1, 1], [1, 0], [1, 0]], dtype=torch.bool)
    groups = torch.tensor([5, 5, 6, 6])
    m = MultiActionMetrics(["click", "like"])
    m.update(probs, labels, groups, mask=mask)
    out = m.compute()
    assert list(out) == ["click", "like"] and list(out["click"]) == ["auc", "gauc", "logloss"]
    # click, all 4 rows: positives 0.9, 0.3 vs negatives 0.1, 0.6: 0.9 -> 2, 0.3 -> 1 => 3 / 4.
    assert float(out["click"]["auc"]) == pytest.approx(0.75)
    # click GAUC: user 5 (0.9+ vs 0.1-) AUC 1; user 6 (0.3+ vs 0.6-) AUC 0; weights 2, 2 -> 0.5.
    assert float(out["click"]["gauc"]) == pytest.approx(0.5)
    # like, rows 0-1 only (the masked label 1 with prob 0.0 would cost 16.1 if it leaked in):
    # AUC 1, GAUC 1 (only user 5), logloss -(ln 0.8 + ln 0.7) / 2 = 0.2899092476264711.
    assert float(out["like"]["auc"]) == pytest.approx(1.0)
    assert float(out["like"]["gauc"]) == pytest.approx(1.0)
    assert float(out["like"]["logloss"]) == pytest.approx(0.2899092476264711, rel=1e-6)
    flat = m.compute_flat()
    assert set(flat) == {f"{k}/{a}" for a in ("click", "like") for k in ("auc", "gauc", "logloss")}
    assert flat["logloss/like"] is out["like"]["logloss"]


def test_multi_action_streaming_and_rank_sync() -> None:
    g = torch.Generator().manual_seed(4)
    probs = torch.rand(60, 3, generator=g)
    labels = (torch.rand(60, 3, generator=g) < 0.4).long()
    mask = torch.rand(60, 3, generator=g) < 0.8
    groups = torch.randint(0, 8, (60,), generator=g)
    actions = ["click", "like", "follow"]
    whole = MultiActionMetrics(actions)
    whole.update(probs, labels, groups, mask)
    parts = MultiActionMetrics(actions)
    for lo, hi in ((0, 25), (25, 26), (26, 60)):
        parts.update(probs[lo:hi], labels[lo:hi], groups[lo:hi], mask[lo:hi])
    expected = {k: float(v) for k, v in whole.compute_flat().items()}
    assert {k: float(v) for k, v in parts.compute_flat().items()} == pytest.approx(expected, abs=1e-6)
    # Direct functions on the masked column agree.
    sel = mask[:, 1]
    assert expected["gauc/like"] == pytest.approx(float(gauc(probs[sel, 1], labels[sel, 1], groups[sel])), abs=1e-6)
    # Two-rank DDP sync through torchmetrics with a fake all-gather: "cat" states concatenate.
    peer_of: dict[int, torch.Tensor] = {}
    rank0 = MultiActionMetrics(
        actions, dist_sync_fn=lambda x, group=None: [x, peer_of[id(x)]], distributed_available_fn=lambda: True
    )
    rank1 = MultiActionMetrics(actions)
    rank0.update(probs[:20], labels[:20], groups[:20], mask[:20])
    rank1.update(probs[20:], labels[20:], groups[20:], mask[20:])
    for name in ("probs", "labels", "mask", "groups"):
        peer_of[id(getattr(rank0, name)[0])] = getattr(rank1, name)[0]
    assert {k: float(v) for k, v in rank0.compute_flat().items()} == pytest.approx(expected, abs=1e-6)


def test_multi_action_options_and_validation() -> None:
    m = MultiActionMetrics(["click"], metrics=("logloss",))
    m.update(torch.tensor([[0.5]]), torch.tensor([[1]]))  # groups not needed without gauc
    assert float(m.compute()["click"]["logloss"]) == pytest.approx(math.log(2))  # 0.6931471805599453
    with pytest.raises(ValueError):
        MultiActionMetrics(["click"], metrics=("auc", "ndcg"))
    with pytest.raises(ValueError):
        MultiActionMetrics(["click", "click"])
    with pytest.raises(ValueError):
        MultiActionMetrics(["click"]).update(torch.rand(2, 1), torch.ones(2, 1))  # gauc needs groups
    with pytest.raises(ValueError):
        MultiActionMetrics(["click", "like"]).update(torch.rand(2, 1), torch.ones(2, 1), torch.zeros(2))


def test_flatten_metrics() -> None:
    nested = {"click": {"auc": 1.0, "gauc": 2.0}, "like": {"auc": 3.0}}
    assert flatten_metrics(nested) == {"auc/click": 1.0, "gauc/click": 2.0, "auc/like": 3.0}
    assert flatten_metrics(nested, sep=".") == {"auc.click": 1.0, "gauc.click": 2.0, "auc.like": 3.0}
