"""Residual k-means, collision resolution, SemanticIds (stats, save/load, item_of) and PrefixTrie."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from recsys.models.semantic_ids import (
    PrefixTrie,
    SemanticIds,
    collision_stats,
    code_stats,
    kmeans,
    nearest_centroid,
    pack,
    resolve_collisions,
    residual_kmeans,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small problems: one intra-op thread avoids contention on a busy machine (and is faster)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _blobs(n_per: int = 100, k: int = 8, d: int = 16, spread: float = 0.3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * 10
    labels = torch.arange(k).repeat_interleave(n_per)
    return centres[labels] + spread * torch.randn(k * n_per, d, generator=g), labels


def _purity(assign: torch.Tensor, labels: torch.Tensor) -> float:
    joint = torch.zeros(int(assign.max()) + 1, int(labels.max()) + 1)
    joint.index_put_((assign, labels), torch.ones(len(assign)), accumulate=True)
    return float(joint.max(1).values.sum() / len(assign))


def test_level_one_recovers_planted_clusters():
    x, labels = _blobs()
    codes, books = residual_kmeans(x, levels=1, codebook_size=8, iters=20)
    assert _purity(codes[:, 0], labels) > 0.9
    assert books[0].shape == (8, 16)


def test_reconstruction_error_decreases_with_levels():
    torch.manual_seed(0)
    x = torch.randn(2000, 16)
    codes, books = residual_kmeans(x, levels=3, codebook_size=16, iters=10)
    recon, errors = torch.zeros_like(x), [float(x.square().sum(1).mean())]
    for l, book in enumerate(books):
        recon += book[codes[:, l]]
        errors.append(float((x - recon).square().sum(1).mean()))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


def test_deterministic_for_a_seed():
    x, _ = _blobs(n_per=50, seed=1)
    a, ba = residual_kmeans(x, levels=2, codebook_size=[8, 4], seed=3)
    b, bb = residual_kmeans(x, levels=2, codebook_size=[8, 4], seed=3)
    assert torch.equal(a, b) and all(torch.equal(p, q) for p, q in zip(ba, bb))


def test_more_clusters_than_distinct_points():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).repeat(10, 1)  # 3 distinct points, 30 rows
    centroids, assign = kmeans(x, k=6, iters=10)
    assert torch.isfinite(centroids).all()
    assert torch.allclose(centroids[assign], x)  # every point sits on a centroid
    codes, _ = residual_kmeans(x, levels=2, codebook_size=6)
    assert ((codes >= 0) & (codes < 6)).all()


def test_empty_clusters_are_reseeded_at_far_points():
    # seeding from a 1-row sample gives k equal seeds: k - 1 empty clusters, which re-seeding must fill
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    centroids, assign = kmeans(x, k=6, iters=20, init_sample=1)
    assert sorted(assign.tolist()) == list(range(6))
    torch.testing.assert_close(centroids[assign], x)


def test_chunked_distances_equal_unchunked():
    torch.manual_seed(0)
    x, c = torch.randn(1000, 8, dtype=torch.float64), torch.randn(37, 8, dtype=torch.float64)
    i1, d1 = nearest_centroid(x, c, chunk_size=7)
    i2, d2 = nearest_centroid(x, c, chunk_size=10_000)
    assert torch.equal(i1, i2)
    torch.testing.assert_close(d1, d2)
    torch.testing.assert_close(d1, torch.cdist(x, c).square().min(1).values)


# ---------------------------------------------------------------------------------------- collisions


def _distinct(codes: torch.Tensor) -> bool:
    return len(torch.unique(codes, dim=0)) == len(codes)


def test_extra_level_appends_rank_among_colliders():
    torch.manual_seed(0)
    x = torch.randn(500, 8)
    codes, books = residual_kmeans(x, levels=2, codebook_size=4, iters=5)
    out = resolve_collisions(codes, x, books, "extra_level")
    assert out.shape == (500, 3) and _distinct(out)
    assert torch.equal(out[:, :2], codes)
    assert int(out[:, 2].max()) + 1 == collision_stats(codes, [4, 4])["max_collisions"]


def test_reassign_keeps_prefix_and_length():
    torch.manual_seed(1)
    x = torch.randn(300, 8)
    codes, books = residual_kmeans(x, levels=2, codebook_size=[4, 128], iters=5)
    assert not _distinct(codes)
    out = resolve_collisions(codes, x, books, "reassign")
    assert out.shape == codes.shape and _distinct(out)
    assert torch.equal(out[:, :-1], codes[:, :-1])
    kept = (out == codes).all(1)
    assert int((~kept).sum()) == round(collision_stats(codes, [4, 128])["collision_rate"] * 300)


def _greedy_reference(codes: torch.Tensor, x: torch.Tensor, books: list[torch.Tensor]) -> torch.Tensor:
    """Plain-Python global greedy: keeper = nearest own centroid; then smallest (dist, item, token) first."""
    r = x.clone()
    for l, b in enumerate(books[:-1]):
        r -= b[codes[:, l]]
    own = (r - books[-1][codes[:, -1]]).square().sum(1)  # same float formulas as the implementation
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(codes.tolist()):
        groups.setdefault(tuple(row), []).append(i)
    used = {tuple(t) for t in codes.tolist()}
    movers = sorted(i for g in groups.values() for i in sorted(g, key=lambda i: (float(own[i]), i))[1:])
    dist = torch.cdist(r[movers], books[-1]).square()
    pairs = sorted(
        (float(dist[m, t]), i, t) for m, i in enumerate(movers) for t in range(books[-1].shape[0])
        if tuple(codes[i, :-1].tolist()) + (t,) not in used
    )
    out, done = codes.clone(), set()
    for _, i, t in pairs:
        key = tuple(codes[i, :-1].tolist()) + (t,)
        if i in done or key in used:
            continue
        out[i, -1] = t
        used.add(key)
        done.add(i)
    return out


def test_reassign_matches_python_greedy():
    torch.manual_seed(2)
    x = torch.randn(90, 4)
    codes, books = residual_kmeans(x, levels=2, codebook_size=[3, 64], iters=5)
    assert not _distinct(codes)
    assert torch.equal(resolve_collisions(codes, x, books, "reassign"), _greedy_reference(codes, x, books))


def test_reassign_raises_when_a_prefix_is_full():
    codes = torch.tensor([[0, 0], [0, 0], [0, 1]])
    books = [torch.zeros(1, 2), torch.tensor([[0.0, 0.0], [1.0, 1.0]])]
    with pytest.raises(ValueError, match="free"):
        resolve_collisions(codes, torch.zeros(3, 2), books, "reassign")


def test_collision_rate_on_a_hand_built_case():
    codes = torch.tensor([[0, 0], [0, 0], [0, 1], [1, 1], [0, 0], [1, 1]])
    assert collision_stats(codes, [2, 2]) == {"collision_rate": 0.5, "max_collisions": 3}
    stats = code_stats(codes, [2, 2])
    assert stats["usage"] == [1.0, 1.0]
    assert stats["perplexity"][0] == pytest.approx(2 ** (1 / 3 * 1.5849625 + 2 / 3 * 0.5849625))


# ----------------------------------------------------------------------------------------- SemanticIds


@pytest.fixture(scope="module")
def sids() -> SemanticIds:
    torch.manual_seed(0)
    return SemanticIds.build(torch.randn(301, 8), levels=3, codebook_size=[4, 4, 4], iters=5)


def test_build_layout_and_stats(sids: SemanticIds):
    assert sids.codes.shape == (301, 4) and (sids.codes[0] == -1).all()
    assert _distinct(sids.codes[1:]) and sids.codebook_sizes[:3] == (4, 4, 4)
    assert sids.codebook_sizes[3] == sids.stats["max_collisions"]
    assert 0 < sids.stats["collision_rate"] < 1 and len(sids.stats["perplexity"]) == 4
    reassigned = SemanticIds.build(torch.randn(301, 8), levels=2, codebook_size=[4, 128], collision="reassign", iters=5)
    assert reassigned.codes.shape == (301, 2) and _distinct(reassigned.codes[1:])


def test_save_load_round_trip(sids: SemanticIds, tmp_path: Path):
    sids.save(tmp_path / "sid")
    back = SemanticIds.load(tmp_path / "sid")
    assert torch.equal(back.codes, sids.codes) and back.codebook_sizes == sids.codebook_sizes
    assert all(torch.equal(a, b) for a, b in zip(back.codebooks, sids.codebooks)) and len(back.codebooks) == 3
    assert back.stats == sids.stats and back.collision == sids.collision


def test_item_of_inverts_codes(sids: SemanticIds):
    assert torch.equal(sids.item_of(sids.codes[1:]), torch.arange(1, 301))
    assert torch.equal(sids.item_of(sids.codes[1:].view(30, 10, 4)), torch.arange(1, 301).view(30, 10))
    valid = {tuple(r) for r in sids.codes[1:].tolist()}
    unused = [t for t in itertools.product(*map(range, sids.codebook_sizes)) if t not in valid][:5]
    bad = torch.tensor([[-1, -1, -1, -1], [4, 0, 0, 0], [0, 0, 0, 99], *unused])
    assert (sids.item_of(bad) == -1).all()


# ------------------------------------------------------------------------------------------------ trie


@pytest.mark.parametrize("dense_budget", [2**26, 0])  # dense tables / sorted-keys fallback
@pytest.mark.parametrize("seed", [0, 1])
def test_trie_masks_match_brute_force(seed: int, dense_budget: int):
    g = torch.Generator().manual_seed(seed)
    sizes = [5, 3, 7]
    codes = torch.stack([torch.randint(s, (60,), generator=g) for s in sizes], 1)
    codes = torch.cat([torch.full((1, 3), -1), codes])  # a padding row, ignored
    trie = PrefixTrie(codes, sizes, dense_budget=dense_budget)
    assert all((t is None) == (dense_budget == 0) for t in trie.tables)
    valid = {tuple(r) for r in codes[1:].tolist()}
    for l in range(3):
        prefixes = torch.tensor(list(itertools.product(*map(range, sizes[:l])))).view(-1, l) if l else torch.zeros(3, 0).long()
        prefixes = torch.cat([prefixes, torch.full((1, l), -1), torch.full((1, l), 9)])
        want = torch.tensor([[any(v[:l] == tuple(p) and v[l] == t for v in valid) for t in range(sizes[l])] for p in prefixes.tolist()])
        assert torch.equal(trie.mask(prefixes), want), l
        assert trie.num_prefixes(l + 1) == len({v[: l + 1] for v in valid})
    assert torch.equal(trie.contains(codes), torch.tensor([False] + [True] * 60))


def test_pack_is_order_preserving():
    codes = torch.tensor(list(itertools.product(range(3), range(4), range(2))))
    assert torch.equal(pack(codes, [3, 4, 2]), torch.arange(24))


def test_empty_trie_allows_nothing():
    trie = PrefixTrie(torch.full((1, 2), -1), [3, 3])
    assert not trie.mask(torch.zeros(2, 0, dtype=torch.long)).any() and not trie.mask(torch.zeros(2, 1).long()).any()
    assert not trie.contains(torch.zeros(2, 2).long()).any()
