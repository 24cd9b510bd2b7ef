"""Ranking metrics: hand cases, ties, exclusion, sampled layout, parity with torchmetrics, streaming."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.functional.retrieval import (
    retrieval_hit_rate,
    retrieval_normalized_dcg,
    retrieval_recall,
    retrieval_reciprocal_rank,
)

from recsys.metrics import (
    RankingMetrics,
    jagged_to_mask,
    metric_names,
    multi_target_metrics,
    ranking_metrics,
    target_rank,
)

G1 = 1 / math.log2(3)  # 0.6309297535714575: gain at 0-based position 1
G2 = 1 / math.log2(4)  # 0.5: position 2
G3 = 1 / math.log2(5)  # 0.43067655807339306: position 3


def approx(d: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: pytest.approx(float(v), abs=1e-6) for k, v in d.items()}


def as_float(d: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items()}


# ------------------------------------------------------------------------------------------------
# Single target, hand-computed
# ------------------------------------------------------------------------------------------------


def test_single_target_hand_case() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.8, 0.1, 0.2, 0.3]])
    target = torch.tensor([2, 0])
    # Row 0: only 0.9 beats 0.5 -> rank 1. Row 1: the target 0.8 is the best -> rank 0.
    assert target_rank(scores, target).tolist() == [1, 0]
    got = as_float(ranking_metrics(scores, target, ks=(1, 2)))
    assert got == approx(
        {
            "hr@1": 0.5,  # (0 + 1) / 2
            "ndcg@1": 0.5,  # (0 + 1) / 2
            "recall@1": 0.5,
            "hr@2": 1.0,
            "ndcg@2": (G1 + 1.0) / 2,  # 0.8154648767857288
            "recall@2": 1.0,
            "mrr": (1 / 2 + 1 / 1) / 2,  # 0.75
        }
    )
    assert list(got) == metric_names((1, 2))


def test_ties_are_pessimistic() -> None:
    # Target (col 1) ties with cols 0 and 2: rank = 0 higher + 2 other equals = 2.
    assert target_rank(torch.tensor([[0.5, 0.5, 0.5, 0.1]]), torch.tensor([1])).tolist() == [2]
    # A constant scorer gets the worst rank N - 1 = 4 whatever the target: never an inflated metric.
    const = torch.zeros(3, 5)
    assert target_rank(const, torch.tensor([0, 2, 4])).tolist() == [4, 4, 4]
    got = as_float(ranking_metrics(const, torch.tensor([0, 2, 4]), ks=(4, 5)))
    assert got["hr@4"] == 0.0 and got["ndcg@4"] == 0.0
    assert got["hr@5"] == 1.0
    assert got["ndcg@5"] == pytest.approx(1 / math.log2(6))  # 0.38685280723454163
    assert got["mrr"] == pytest.approx(0.2)  # 1 / (4 + 1)


def test_nan_scores_count_as_minus_inf() -> None:
    scores = torch.tensor([[float("nan"), 0.3, 0.1], [0.2, float("nan"), float("nan")]])
    # Row 0: the NaN candidate ranks below the target 0.3 -> rank 0.
    # Row 1: the NaN target is -inf and ties with the other NaN -> rank 2 (the worst), not 0.
    assert target_rank(scores, torch.tensor([1, 1])).tolist() == [0, 2]


def test_mrr_is_not_truncated() -> None:
    scores = torch.arange(100, 0, -1, dtype=torch.float32)[None]  # item i has rank i
    got = as_float(ranking_metrics(scores, torch.tensor([49]), ks=(10,)))
    assert got["hr@10"] == 0.0
    assert got["mrr"] == pytest.approx(1 / 50)  # 0.02, although the target is outside the top 10


# ------------------------------------------------------------------------------------------------
# Exclusion and the sampled layout
# ------------------------------------------------------------------------------------------------


def test_exclude_padding_and_history() -> None:
    scores = torch.tensor([[5.0, 1.0, 2.0, 3.0, 4.0]])
    target = torch.tensor([3])
    # Item 0 (padding) and item 4 both beat the target: rank 2.
    assert target_rank(scores, target).tolist() == [2]
    # Padding given as an index list, as a tensor of indices, or as a column mask: rank 1.
    col = torch.tensor([True, False, False, False, False])
    for pad in ([0], torch.tensor([0]), col):
        assert target_rank(scores, target, exclude=pad).tolist() == [1]
    # A per-row history mask that also covers the target: the target is still ranked, item 4 is gone.
    history = torch.tensor([[True, False, False, True, True]])
    assert target_rank(scores, target, exclude=history).tolist() == [0]
    # Excluded items also stop counting as ties: a tie with an excluded item is free.
    ties = torch.tensor([[2.0, 2.0, 1.0]])
    assert target_rank(ties, torch.tensor([1])).tolist() == [1]
    assert target_rank(ties, torch.tensor([1]), exclude=[0]).tolist() == [0]


def test_exclude_matches_naive_loop_with_ties() -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 4, (64, 12), generator=g).float()  # many ties
    target = torch.randint(0, 12, (64,), generator=g)
    exclude = torch.rand(64, 12, generator=g) < 0.3
    got = target_rank(scores, target, exclude=exclude)
    for i in range(64):
        keep = ~exclude[i]
        keep[target[i]] = True
        others = keep.clone()
        others[target[i]] = False
        t = scores[i, target[i]]
        naive = int((scores[i][keep] > t).sum() + (scores[i][others] == t).sum())
        assert int(got[i]) == naive


def test_sampled_layout() -> None:
    # Column 0 is the positive, columns 1.. are sampled negatives.
    scores = torch.tensor([[0.8, 0.3, 0.9, 0.1], [0.2, 0.2, 0.1, 0.0], [0.7, 0.1, 0.2, 0.3]])
    # Row 0: 0.9 beats 0.8 -> 1. Row 1: ties with one negative -> 1 (pessimistic). Row 2: best -> 0.
    assert target_rank(scores).tolist() == [1, 1, 0]
    got = as_float(ranking_metrics(scores, ks=(1, 2)))
    assert got["hr@1"] == pytest.approx(1 / 3)
    assert got["ndcg@2"] == pytest.approx((G1 + G1 + 1.0) / 3)  # 0.7539531690476383
    assert got["mrr"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)  # 0.6666666666666666
    # Same as the full layout with target 0, and accidental hits can be excluded.
    assert torch.equal(target_rank(scores), target_rank(scores, torch.zeros(3, dtype=torch.long)))
    collide = torch.tensor([[False, False, True, False], [False] * 4, [False] * 4])
    assert target_rank(scores, exclude=collide).tolist() == [0, 1, 0]


def test_k_larger_than_n() -> None:
    scores = torch.tensor([[0.3, 0.2, 0.1]])
    got = as_float(ranking_metrics(scores, torch.tensor([2]), ks=(5,)))  # rank 2 < 5
    assert got == approx({"hr@5": 1.0, "ndcg@5": G2, "recall@5": 1.0, "mrr": 1 / 3})
    # Multi-target: items 0 and 2 relevant, at positions 0 and 2; IDCG over min(|T|, K) = 2 positions.
    rel = torch.tensor([[True, False, True]])
    got = as_float(ranking_metrics(scores, relevant=rel, ks=(5,)))
    assert got == approx({"hr@5": 1.0, "ndcg@5": (1 + G2) / (1 + G1), "recall@5": 1.0, "mrr": 1.0})
    # (1 + 0.5) / 1.6309297535714575 = 0.9197207891481876


# ------------------------------------------------------------------------------------------------
# Multiple targets
# ------------------------------------------------------------------------------------------------


def test_multi_target_hand_case() -> None:
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5]])
    rel = torch.tensor([[False, True, False, True, False]])  # relevant at positions 1 and 3
    got = as_float(ranking_metrics(scores, relevant=rel, ks=(1, 2, 5)))
    assert got == approx(
        {
            "hr@1": 0.0,
            "ndcg@1": 0.0,
            "recall@1": 0.0,
            "hr@2": 1.0,
            "ndcg@2": G1 / (1 + G1),  # 0.38685280723454163
            "recall@2": 0.5,
            "hr@5": 1.0,
            "ndcg@5": (G1 + G3) / (1 + G1),  # 1.0616063116448506 / 1.6309297535714575 = 0.6509209298071326
            "recall@5": 1.0,
            "mrr": 0.5,  # first relevant at position 1
        }
    )


def test_multi_target_ties_are_pessimistic() -> None:
    # Four equal scores, two relevant: the relevant ones take the last places [F, F, T, T].
    scores = torch.zeros(1, 4)
    rel = torch.tensor([[True, True, False, False]])
    got = as_float(ranking_metrics(scores, relevant=rel, ks=(2, 4)))
    assert got == approx(
        {
            "hr@2": 0.0,
            "ndcg@2": 0.0,
            "recall@2": 0.0,
            "hr@4": 1.0,
            "ndcg@4": (G2 + G3) / (1 + G1),  # 0.9306765580733931 / 1.6309297535714575 = 0.570643
            "recall@4": 1.0,
            "mrr": 1 / 3,
        }
    )
    # A tie block cut by the top-K boundary: 0.9 > {0.5 x 4} with one relevant 0.5; K = 3 keeps two
    # of the four 0.5s, and the pessimistic order puts the three irrelevant ones first -> no hit.
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.5, 0.5]])
    rel = torch.tensor([[False, True, False, False, False]])
    got = as_float(ranking_metrics(scores, relevant=rel, ks=(3, 5)))
    assert got["hr@3"] == 0.0 and got["hr@5"] == 1.0
    assert got["ndcg@5"] == pytest.approx(1 / math.log2(6))  # position 4: 0.38685280723454163
    assert got["mrr"] == pytest.approx(1 / 5)


def naive_multi(scores: torch.Tensor, rel: torch.Tensor, ks: tuple[int, ...], keep: torch.Tensor) -> dict:
    """Reference: full pessimistic ordering of one row with Python's sort (score desc, irrelevant first)."""
    items = [i for i in range(scores.numel()) if keep[i] or rel[i]]
    s = [float(scores[i]) if not math.isnan(float(scores[i])) else -math.inf for i in range(scores.numel())]
    order = sorted(items, key=lambda i: (-s[i], bool(rel[i])))
    hits = [bool(rel[i]) for i in order]
    n_rel = int(rel.sum())
    out = {}
    for k in ks:
        dcg = sum(1 / math.log2(p + 2) for p, h in enumerate(hits[:k]) if h)
        idcg = sum(1 / math.log2(p + 2) for p in range(min(n_rel, k)))
        out[f"hr@{k}"] = float(any(hits[:k]))
        out[f"ndcg@{k}"] = dcg / idcg
        out[f"recall@{k}"] = sum(hits[:k]) / n_rel
    out["mrr"] = 1 / (hits.index(True) + 1)
    return out


def test_multi_target_matches_naive_ordering_with_ties_and_exclusion() -> None:
    g = torch.Generator().manual_seed(2)
    b, n, ks = 40, 15, (1, 3, 7, 20)
    scores = torch.randint(0, 5, (b, n), generator=g).float()
    rel = torch.rand(b, n, generator=g) < 0.25
    rel[:, 0] |= ~rel.any(1)
    exclude = torch.rand(b, n, generator=g) < 0.3
    got = multi_target_metrics(scores, rel, ks, exclude=exclude)
    for i in range(b):
        ref = naive_multi(scores[i], rel[i], ks, ~exclude[i])
        for key, value in ref.items():
            assert float(got[key][i]) == pytest.approx(value, abs=1e-6), (i, key)


def test_multi_target_with_one_target_equals_single_target() -> None:
    g = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 6, (50, 30), generator=g).float()
    target = torch.randint(0, 30, (50,), generator=g)
    exclude = torch.rand(50, 30, generator=g) < 0.2
    rel = torch.nn.functional.one_hot(target, 30).bool()
    single = ranking_metrics(scores, target, ks=(1, 5, 40), exclude=exclude)
    multi = ranking_metrics(scores, relevant=rel, ks=(1, 5, 40), exclude=exclude)
    for key in single:
        assert float(multi[key]) == pytest.approx(float(single[key]), abs=1e-6), key


def test_jagged_targets_equal_mask() -> None:
    scores = torch.randn(3, 6, generator=torch.Generator().manual_seed(4))
    values, offsets = torch.tensor([1, 4, 4, 0, 2, 3, 5]), torch.tensor([0, 3, 4, 7])  # dup 4 collapses
    mask = jagged_to_mask(values, offsets, 6)
    assert mask.sum(1).tolist() == [2, 1, 3]
    a = ranking_metrics(scores, relevant=(values, offsets), ks=(2,))
    b = ranking_metrics(scores, relevant=mask, ks=(2,))
    assert as_float(a) == approx(b)


def test_rows_without_relevant_items_are_skipped() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.3, 0.2, 0.1]])
    rel = torch.tensor([[False, False, True], [False, False, False]])
    rows = multi_target_metrics(scores, rel, ks=(1,))
    assert math.isnan(float(rows["mrr"][1]))
    got = as_float(ranking_metrics(scores, relevant=rel, ks=(1,)))
    assert got == approx({"hr@1": 0.0, "ndcg@1": 0.0, "recall@1": 0.0, "mrr": 0.5})  # row 0 alone


# ------------------------------------------------------------------------------------------------
# Parity with torchmetrics on data without ties
# ------------------------------------------------------------------------------------------------


def untied_scores(b: int, n: int, seed: int) -> torch.Tensor:
    return torch.rand(b, n, generator=torch.Generator().manual_seed(seed)).argsort(1).float()  # permutations


def torchmetrics_means(scores: torch.Tensor, rel: torch.Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    fns = {"hr": retrieval_hit_rate, "ndcg": retrieval_normalized_dcg, "recall": retrieval_recall}
    out = {}
    for k in ks:
        for name, fn in fns.items():
            out[f"{name}@{k}"] = sum(float(fn(s, r, top_k=k)) for s, r in zip(scores, rel)) / len(scores)
    out["mrr"] = sum(float(retrieval_reciprocal_rank(s, r)) for s, r in zip(scores, rel)) / len(scores)
    return out


def test_single_target_parity_with_torchmetrics() -> None:
    scores = untied_scores(48, 40, seed=5)
    target = torch.randint(0, 40, (48,), generator=torch.Generator().manual_seed(6))
    ks = (1, 5, 10, 60)
    rel = torch.nn.functional.one_hot(target, 40).bool()
    expected = torchmetrics_means(scores, rel, ks)
    assert as_float(ranking_metrics(scores, target, ks=ks)) == pytest.approx(expected, abs=1e-5)


def test_multi_target_parity_with_torchmetrics() -> None:
    scores = untied_scores(48, 40, seed=7)
    rel = torch.rand(48, 40, generator=torch.Generator().manual_seed(8)) < 0.15
    rel[:, 3] |= ~rel.any(1)  # torchmetrics scores empty rows 0; we skip them: keep none empty
    ks = (1, 5, 10, 60)
    expected = torchmetrics_means(scores, rel, ks)
    assert as_float(ranking_metrics(scores, relevant=rel, ks=ks)) == pytest.approx(expected, abs=1e-5)


# ------------------------------------------------------------------------------------------------
# dtypes, size, streaming
# ------------------------------------------------------------------------------------------------


def test_bfloat16_matches_float32_on_exact_values() -> None:
    g = torch.Generator().manual_seed(9)
    scores = torch.randint(0, 64, (16, 100), generator=g).float()  # integers are exact in bfloat16
    target = torch.randint(0, 100, (16,), generator=g)
    rel = torch.rand(16, 100, generator=g) < 0.1
    rel[:, 0] = True
    for kwargs in ({"target": target}, {"relevant": rel}):
        a = ranking_metrics(scores, ks=(5, 20), **kwargs)
        b = ranking_metrics(scores.bfloat16(), ks=(5, 20), **kwargs)
        assert as_float(b) == approx(a)


def test_large_catalogue() -> None:
    n = 1_000_000
    scores = torch.rand(3, n, generator=torch.Generator().manual_seed(10))
    scores[:, 0] = 2.0  # padding item 0 beats everything unless excluded
    order = scores.argsort(1, descending=True)
    target = order[torch.arange(3), torch.tensor([1, 10, 11])]  # ranks 0, 9, 10 once item 0 is gone
    assert target_rank(scores, target).tolist() == [1, 10, 11]
    assert target_rank(scores, target, exclude=[0]).tolist() == [0, 9, 10]
    got = as_float(ranking_metrics(scores, target, ks=(10,), exclude=[0]))
    assert got == approx(
        {
            "hr@10": 2 / 3,
            "ndcg@10": (1 + 1 / math.log2(11)) / 3,  # 0.4223356892077826
            "recall@10": 2 / 3,
            "mrr": (1 + 1 / 10 + 1 / 11) / 3,  # 0.396969696969697
        }
    )
    rel = torch.zeros(3, n, dtype=torch.bool)
    rel[torch.arange(3), target] = True
    assert as_float(ranking_metrics(scores, relevant=rel, ks=(10,), exclude=[0])) == approx(got)


def test_streaming_equals_one_update_on_concatenation() -> None:
    scores = torch.randint(0, 8, (30, 25), generator=torch.Generator().manual_seed(11)).float()
    target = torch.randint(0, 25, (30,), generator=torch.Generator().manual_seed(12))
    whole = RankingMetrics(ks=(3, 10))
    whole.update(scores, target, exclude=[0])
    parts = RankingMetrics(ks=(3, 10))
    for lo, hi in ((0, 7), (7, 8), (8, 30)):
        parts.update(scores[lo:hi], target[lo:hi], exclude=[0])
    assert int(parts.count) == 30
    assert as_float(parts.compute()) == approx(whole.compute())
    assert as_float(whole.compute()) == approx(ranking_metrics(scores, target, ks=(3, 10), exclude=[0]))
    assert set(whole.compute()) == {"hr@3", "ndcg@3", "recall@3", "hr@10", "ndcg@10", "recall@10", "mrr"}


def test_streaming_multi_target_skips_empty_rows() -> None:
    scores = untied_scores(20, 10, seed=13)
    rel = torch.rand(20, 10, generator=torch.Generator().manual_seed(14)) < 0.2
    rel[:5] = False  # five rows without a relevant item
    rel[5:, 0] = True
    m = RankingMetrics(ks=(2,))
    m.update(scores[:12], relevant=rel[:12])
    m.update(scores[12:], relevant=rel[12:])
    assert int(m.count) == 15
    assert as_float(m.compute()) == approx(ranking_metrics(scores[5:], relevant=rel[5:], ks=(2,)))


def test_states_sum_across_ranks() -> None:
    """A two-rank DDP sync through torchmetrics' own machinery, with a fake all-gather."""
    scores, target = untied_scores(10, 20, seed=15), torch.arange(10)
    peer_of: dict[int, torch.Tensor] = {}
    rank0 = RankingMetrics(
        ks=(5,), dist_sync_fn=lambda x, group=None: [x, peer_of[id(x)]], distributed_available_fn=lambda: True
    )
    rank1, whole = RankingMetrics(ks=(5,)), RankingMetrics(ks=(5,))
    rank0.update(scores[:4], target[:4])
    rank1.update(scores[4:], target[4:])
    whole.update(scores, target)
    peer_of.update({id(rank0.sums): rank1.sums, id(rank0.count): rank1.count})
    assert as_float(rank0.compute()) == approx(whole.compute())
    assert int(rank0.count) == 4  # unsynced again after compute


def test_input_validation() -> None:
    with pytest.raises(ValueError):
        RankingMetrics(ks=(0, 5))
    with pytest.raises(ValueError):
        ranking_metrics(torch.rand(2, 3), torch.tensor([0]))
    with pytest.raises(ValueError):
        ranking_metrics(torch.rand(2, 3), torch.tensor([0, 1]), relevant=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError):
        target_rank(torch.rand(2, 3), torch.tensor([0, 1]), exclude=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError):  # per-row index lists must be given as a mask
        target_rank(torch.rand(2, 3), torch.tensor([0, 1]), exclude=torch.tensor([[1], [2]]))
