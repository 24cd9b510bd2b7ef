"""Semantic IDs (SIDs): residual k-means codes, collision resolution, SID -> item lookup, prefix trie.

A semantic ID is a short tuple of codebook tokens standing for one item; similar items share prefixes.
TIGER (Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023, Sec. 3.1) makes them
with an RQ-VAE (3 levels x 256 codes) and appends one extra token so that items with the same code tuple
get distinct SIDs. GEMs (arXiv 2602.13631; we only have a study note, see /work/shared/PAPERS.md Sec. 2.2)
uses 3 levels of *residual k-means* with codebooks of 8192; the defaults here are scaled down to 256.
The collision options, the padding convention and the trie layout below are our reconstruction.

Conventions: ``codes [num_items, L]``, row ``i`` = SID of item index ``i`` of the toolkit's item
vocabulary. Row 0 (the padding index) is the reserved marker ``-1`` at every level: it is never a valid
SID, ``item_of`` never returns 0, and the trie ignores it.

>>> g = torch.Generator().manual_seed(0)
>>> emb = torch.randn(101, 8, generator=g)                  # 100 items + the padding row 0
>>> sids = SemanticIds.build(emb, levels=2, codebook_size=4, iters=5)
>>> sids.codes.shape[1], sids.codebook_sizes[:2]           # 2 k-means levels + TIGER's extra token
(3, (4, 4))
>>> sids.codes[0].tolist()
[-1, -1, -1]
>>> bool(torch.equal(sids.item_of(sids.codes[1:]), torch.arange(1, 101)))
True
>>> sids.item_of(torch.tensor([[-1, 0, 0], [0, 0, 99]])).tolist()    # padding, out of range
[-1, -1]
>>> trie = sids.trie()
>>> trie.mask(torch.zeros(5, 0, dtype=torch.long)).shape   # 5 empty prefixes -> level-0 tokens
torch.Size([5, 4])
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file

Collision = Literal["extra_level", "reassign"]
_MAX_KEY = 2**62


# ----------------------------------------------------------------------------------------- k-means


def nearest_centroid(x: torch.Tensor, centroids: torch.Tensor, chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Index ``[N]`` and squared distance ``[N]`` of each row's nearest centroid (first index on ties).

    Rows are processed ``chunk_size`` at a time (default: about 2^22 distances per chunk), so memory is
    ``O(chunk_size * K)`` whatever ``N``. ``||x||^2 - 2 x.c + ||c||^2``, clamped at 0.
    """
    n, k = x.shape[0], centroids.shape[0]
    chunk = chunk_size or max(1, 2**22 // max(k, 1))
    c_sq = centroids.square().sum(1)
    idx = torch.empty(n, dtype=torch.long, device=x.device)
    d2 = torch.empty(n, dtype=x.dtype, device=x.device)
    for start in range(0, n, chunk):
        xb = x[start : start + chunk]
        m, i = (c_sq[None, :] - 2 * xb @ centroids.T).min(1)
        idx[start : start + chunk] = i
        d2[start : start + chunk] = (m + xb.square().sum(1)).clamp_min(0)
    return idx, d2


def _kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): next seed drawn with probability ~ D(x)^2.

    Loops over the ``k`` seeds, vectorised over points. When every point already coincides with a seed
    (fewer distinct points than ``k``), the remaining seeds are taken in index order; they become empty
    clusters that Lloyd's step re-seeds or leaves empty.
    """
    n = x.shape[0]
    chosen = torch.empty(k, dtype=torch.long, device=x.device)
    chosen[0] = torch.randint(n, (1,), generator=gen, device=x.device)
    min_d2 = (x - x[chosen[0]]).square().sum(1)
    for j in range(1, k):
        if float(min_d2.sum()) > 0:
            chosen[j] = torch.multinomial(min_d2, 1, generator=gen)[0]
        else:
            chosen[j] = j % n
        min_d2 = torch.minimum(min_d2, (x - x[chosen[j]]).square().sum(1))
    return x[chosen].clone()


def kmeans(
    x: torch.Tensor, k: int, iters: int = 20, gen: torch.Generator | None = None,
    chunk_size: int | None = None, init_sample: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding: ``(centroids [k, d], assignment [N])``.

    Seeding runs on a random subsample of ``init_sample`` rows (default ``64 * k``; all rows when fewer).
    An empty cluster is re-seeded at the points farthest from their centroid (largest distance first,
    ties by index), the usual fix (as in scikit-learn). Stops early when the assignment no longer changes.
    The returned assignment is the nearest centroid of every row under the returned centroids.
    """
    gen = gen or torch.Generator(device=x.device).manual_seed(0)
    n = x.shape[0]
    m = min(n, init_sample or 64 * k)
    sample = x if m == n else x[torch.randperm(n, generator=gen, device=x.device)[:m]]
    centroids = _kmeans_pp(sample, k, gen)
    prev: torch.Tensor | None = None
    reseeded = False
    for _ in range(iters):
        assign, d2 = nearest_centroid(x, centroids, chunk_size)
        if prev is not None and not reseeded and torch.equal(assign, prev):
            return centroids, assign
        prev = assign
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        nonempty = counts > 0
        centroids = torch.where(nonempty[:, None], sums / counts.clamp_min(1)[:, None].to(x.dtype), centroids)
        empty = (~nonempty).nonzero().squeeze(1)
        reseeded = False
        if len(empty):
            far = torch.argsort(d2, descending=True, stable=True)[: len(empty)]
            centroids[empty[: len(far)]] = x[far]
            reseeded = bool((d2[far] > 0).any())
    return centroids, nearest_centroid(x, centroids, chunk_size)[0]


def residual_kmeans(
    x: torch.Tensor, levels: int = 3, codebook_size: int | Sequence[int] = 256, iters: int = 20, seed: int = 0,
    chunk_size: int | None = None, init_sample: int | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Residual k-means (GEMs' tokenizer): level ``l`` clusters what the levels before it left unexplained.

    ``r_0 = x``; ``codes[:, l] = kmeans(r_l)``; ``r_{l+1} = r_l - C_l[codes[:, l]]``. Returns
    ``(codes LongTensor [N, levels], codebooks [C_l, d] per level)``; deterministic for a ``seed`` (on
    CPU; CUDA's ``index_add_`` may differ in the last bits between runs).

    >>> x = torch.cat([torch.randn(50, 2) * 0.01 + 5, torch.randn(50, 2) * 0.01 - 5])
    >>> codes, books = residual_kmeans(x, levels=2, codebook_size=[2, 3])
    >>> codes.shape, [tuple(b.shape) for b in books], len(set(codes[:50, 0].tolist()))
    (torch.Size([100, 2]), [(2, 2), (3, 2)], 1)
    """
    sizes = [codebook_size] * levels if isinstance(codebook_size, int) else list(codebook_size)
    if len(sizes) != levels:
        raise ValueError(f"{len(sizes)} codebook sizes for {levels} levels")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    residual = x.float()
    codes, books = [], []
    for k in sizes:
        centroids, assign = kmeans(residual, k, iters, gen, chunk_size, init_sample)
        residual = residual - centroids[assign]
        codes.append(assign)
        books.append(centroids)
    return torch.stack(codes, 1), books


# ----------------------------------------------------------------------------- packing and collisions


def pack(codes: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Mixed-radix integer key of each code tuple ``[..., l] -> [...]`` (``l = 0`` gives 0); order-preserving.

    >>> pack(torch.tensor([[1, 2], [0, 3]]), [2, 4]).tolist()   # 1*4+2, 0*4+3
    [6, 3]
    """
    if math.prod(sizes) >= _MAX_KEY:
        raise ValueError(f"codebook sizes {list(sizes)} do not fit a 62-bit key")
    key = torch.zeros(codes.shape[:-1], dtype=torch.long, device=codes.device)
    for l, size in enumerate(sizes):
        key = key * size + codes[..., l]
    return key


def _in_range(codes: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    hi = torch.tensor(list(sizes), device=codes.device)
    return ((codes >= 0) & (codes < hi)).all(-1)


def _rank_in_group(keys: torch.Tensor) -> torch.Tensor:
    """Position of each row among the rows with the same key, in row order: ``[5, 7, 5] -> [0, 0, 1]``."""
    order = torch.argsort(keys, stable=True)
    sk = keys[order]
    pos = torch.arange(len(keys), device=keys.device)
    start = torch.searchsorted(sk, sk)  # first row of each group in sorted order
    rank = torch.empty_like(pos)
    rank[order] = pos - start
    return rank


def resolve_collisions(
    codes: torch.Tensor, x: torch.Tensor | None, codebooks: Sequence[torch.Tensor], method: Collision = "extra_level",
) -> torch.Tensor:
    """Make every row of ``codes [N, L]`` distinct.

    - ``"extra_level"`` (TIGER Sec. 3.1): append a token = the item's rank among the items sharing its
      tuple (row order), e.g. ``(12, 24, 52, 0)`` and ``(12, 24, 52, 1)``. Output ``[N, L + 1]``; the
      extra level's size is the largest collision group. Needs no embeddings (``x`` may be None).
    - ``"reassign"`` (our reconstruction): in each group the item nearest its last-level centroid keeps
      the tuple; the others move to a free last-level token under the same ``L - 1`` prefix, by greedy
      matching on the distance from their last-level residual (``x`` minus the first ``L - 1`` centroids)
      to that token's centroid: smallest (distance, item, token) pair first. Rounds of mutual-best pairs
      give exactly that greedy matching, vectorised. Output ``[N, L]``; memory ``O(movers * C_L)``.
      Raises ``ValueError`` when a prefix has more colliding items than free tokens.

    >>> c = torch.tensor([[0, 1], [0, 1], [1, 0]])
    >>> resolve_collisions(c, None, [], "extra_level").tolist()
    [[0, 1, 0], [0, 1, 1], [1, 0, 0]]
    """
    sizes = [int(b.shape[0]) for b in codebooks] or (codes.max(0).values + 1).tolist()
    keys = pack(codes, sizes)
    if method == "extra_level":
        return torch.cat([codes, _rank_in_group(keys)[:, None]], 1)
    if method != "reassign":
        raise ValueError(f"unknown collision method {method!r}")
    if x is None:
        raise ValueError("reassign needs the item embeddings x")
    last = codebooks[-1]
    residual = x.float().clone()
    for l, book in enumerate(codebooks[:-1]):
        residual -= book[codes[:, l]]
    d_own = (residual - last[codes[:, -1]]).square().sum(1)
    # keeper = smallest own distance, ties by row: sort by distance, then stably by key
    by_dist = torch.argsort(d_own, stable=True)
    order = by_dist[torch.argsort(keys[by_dist], stable=True)]
    sk = keys[order]
    movers = order[torch.searchsorted(sk, sk) != torch.arange(len(sk), device=sk.device)].sort().values
    out = codes.clone()
    if len(movers) == 0:
        return out
    c_last = last.shape[0]
    pkeys = pack(codes[:, :-1], sizes[:-1])
    groups, g = torch.unique(pkeys[movers], return_inverse=True)  # prefix groups holding movers
    pos = torch.searchsorted(groups, pkeys).clamp(max=len(groups) - 1)
    has = groups[pos] == pkeys
    occupied = torch.zeros(len(groups), c_last, dtype=torch.bool, device=codes.device)
    occupied[pos[has], codes[has, -1]] = True
    free = c_last - occupied.sum(1)
    need = torch.bincount(g, minlength=len(groups))
    if bool((need > free).any()):
        raise ValueError("a prefix has more colliding items than free last-level codes; use 'extra_level'")
    dist = torch.cdist(residual[movers], last).square()  # [M, C]
    big = torch.iinfo(torch.long).max
    left = torch.arange(len(movers), device=codes.device)  # unassigned movers, in row order
    while len(left):
        gl = g[left]
        d = dist[left].masked_fill(occupied[gl], math.inf)
        best_d, best_c = d.min(1)  # each mover's best free token (first on ties)
        gi = gl[:, None].expand_as(d)
        col_min = torch.full_like(occupied, math.inf, dtype=d.dtype).scatter_reduce_(0, gi, d, "amin")
        cand = torch.where(d == col_min[gl], left[:, None], big)
        col_best = torch.full(occupied.shape, big, device=codes.device).scatter_reduce_(0, gi, cand, "amin")
        win = torch.isfinite(best_d) & (col_best[gl, best_c] == left)  # mutual best: in the greedy matching
        out[movers[left[win]], -1] = best_c[win]
        occupied[gl[win], best_c[win]] = True
        left = left[~win]
    return out


# ------------------------------------------------------------------------------------------ the trie


class PrefixTrie:
    """Allowed next tokens after any SID prefix, for constrained beam search.

    Stores, per length ``l = 0..L``, the sorted packed keys of the distinct length-``l`` prefixes, and per
    level a dense bool table ``[P_l, C_l]`` of allowed next tokens when ``P_l * C_l <= dense_budget``: a
    lookup is then one ``searchsorted`` and a row gather. Above the budget (paper scale: 8192 codes per
    level) the level falls back to the keys alone: since ``key(p + t) = key(p) * C_l + t``, the children of
    ``p`` are the contiguous run of length-``(l+1)`` keys in ``[key(p) * C_l, (key(p) + 1) * C_l)``, found by
    two ``searchsorted`` calls and scattered into the mask (memory ``O(P)`` int64, lookup
    ``O(B log P + B * C_l)``). Unknown or out-of-range prefixes get an all-False row.

    >>> trie = PrefixTrie(torch.tensor([[0, 1], [0, 2], [2, 0]]), [3, 3])
    >>> trie.mask(torch.zeros(1, 0, dtype=torch.long)).tolist()
    [[True, False, True]]
    >>> trie.mask(torch.tensor([[0], [1], [2]])).tolist()
    [[False, True, True], [False, False, False], [True, False, False]]
    >>> trie.contains(torch.tensor([[0, 2], [2, 2]])).tolist()
    [True, False]
    """

    def __init__(self, codes: torch.Tensor, codebook_sizes: Sequence[int], dense_budget: int = 2**26):
        self.codebook_sizes = tuple(int(s) for s in codebook_sizes)
        if codes.shape[1] != len(self.codebook_sizes):
            raise ValueError(f"codes have {codes.shape[1]} levels, {len(self.codebook_sizes)} sizes given")
        codes = codes[_in_range(codes, self.codebook_sizes)]  # drops the padding row (-1)
        self.keys = [torch.zeros(min(len(codes), 1), dtype=torch.long, device=codes.device)]
        self.keys += [torch.unique(pack(codes[:, :l], self.codebook_sizes[:l])) for l in range(1, self.levels + 1)]
        self.tables: list[torch.Tensor | None] = []
        for l, c in enumerate(self.codebook_sizes):
            parents, children = self.keys[l], self.keys[l + 1]
            if len(parents) * c > dense_budget:
                self.tables.append(None)
                continue
            table = torch.zeros(len(parents), c, dtype=torch.bool, device=codes.device)
            table[torch.searchsorted(parents, children // c), children % c] = True
            self.tables.append(table)

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    def to(self, device: torch.device | str) -> PrefixTrie:
        self.keys = [k.to(device) for k in self.keys]
        self.tables = [t if t is None else t.to(device) for t in self.tables]
        return self

    def num_prefixes(self, length: int) -> int:
        """Distinct valid prefixes of ``length`` tokens (``levels`` gives the number of SIDs)."""
        return len(self.keys[length])

    def mask(self, prefix: torch.Tensor) -> torch.Tensor:
        """``prefix [B, l]`` (``0 <= l < L``) -> bool ``[B, C_l]``: True where ``prefix + t`` starts a valid SID."""
        b, l = prefix.shape
        c = self.codebook_sizes[l]
        keys, children = self.keys[l].to(prefix.device), self.keys[l + 1].to(prefix.device)
        ok = _in_range(prefix, self.codebook_sizes[:l])
        q = pack(prefix.clamp_min(0), self.codebook_sizes[:l])
        table = self.tables[l]
        if table is not None:
            if len(keys) == 0:
                return torch.zeros(b, c, dtype=torch.bool, device=prefix.device)
            pos = torch.searchsorted(keys, q).clamp(max=len(keys) - 1)
            return table.to(prefix.device)[pos] & (ok & (keys[pos] == q))[:, None]
        uq, inv = torch.unique(q, return_inverse=True)  # beams often share prefixes: expand each once
        start = torch.searchsorted(children, uq * c)
        count = torch.searchsorted(children, (uq + 1) * c) - start
        row = torch.repeat_interleave(torch.arange(len(uq), device=prefix.device), count)
        first = torch.repeat_interleave(start - (count.cumsum(0) - count), count)
        idx = first + torch.arange(len(row), device=prefix.device)
        out = torch.zeros(len(uq), c, dtype=torch.bool, device=prefix.device)
        out[row, children[idx] % c] = True
        return out[inv] & ok[:, None]

    def contains(self, sids: torch.Tensor) -> torch.Tensor:
        """``[..., L] -> bool [...]``: whether each full SID belongs to an item."""
        full = self.keys[self.levels].to(sids.device)
        ok = _in_range(sids, self.codebook_sizes)
        q = pack(sids.clamp_min(0), self.codebook_sizes)
        pos = torch.searchsorted(full, q).clamp(max=len(full) - 1)
        return ok & (full[pos] == q) if len(full) else torch.zeros_like(ok)


# ----------------------------------------------------------------------------------- the SID table


def code_stats(codes: torch.Tensor, sizes: Sequence[int]) -> dict[str, list[float]]:
    """Per level: ``usage`` (fraction of the codebook used), ``entropy`` (nats) and ``perplexity``
    (``exp(entropy)``, at most ``C_l``) of the token distribution over items.

    >>> code_stats(torch.tensor([[0], [1], [0], [1]]), [4])
    {'usage': [0.5], 'entropy': [0.6931471805599453], 'perplexity': [2.0]}
    """
    usage, entropy = [], []
    for l, size in enumerate(sizes):
        p = torch.bincount(codes[:, l], minlength=size).double() / max(len(codes), 1)
        usage.append(float((p > 0).double().mean()))
        entropy.append(float(-(p[p > 0] * p[p > 0].log()).sum()))
    return {"usage": usage, "entropy": entropy, "perplexity": [math.exp(h) for h in entropy]}


def collision_stats(codes: torch.Tensor, sizes: Sequence[int]) -> dict[str, float]:
    """``collision_rate = 1 - distinct tuples / items``: the share of items that must be given another SID
    (what ``reassign`` moves); ``max_collisions``: the largest group of items sharing a tuple.

    >>> collision_stats(torch.tensor([[0, 0], [0, 0], [0, 1], [1, 1], [0, 0]]), [2, 2])
    {'collision_rate': 0.4, 'max_collisions': 3}
    """
    _, counts = torch.unique(pack(codes, sizes), return_counts=True)
    return {"collision_rate": 1 - len(counts) / max(len(codes), 1), "max_collisions": int(counts.max()) if len(counts) else 0}


@dataclass
class SemanticIds:
    """The SID of every item of a vocabulary, with the k-means codebooks and code statistics.

    ``codes [num_items, L]`` (row 0 = padding = all ``-1``), ``codebook_sizes`` per level (including the
    extra collision level, if any), ``codebooks`` (k-means centroids ``[C_l, d]`` of the k-means levels),
    ``collision`` (the method used) and ``stats``: ``usage`` / ``entropy`` / ``perplexity`` per level of
    the final codes, and ``collision_rate`` / ``max_collisions`` of the k-means codes before resolution.
    """

    codes: torch.Tensor
    codebook_sizes: tuple[int, ...]
    codebooks: list[torch.Tensor] = field(default_factory=list)
    collision: str = "extra_level"
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def num_items(self) -> int:
        """Vocabulary size, including the padding row 0."""
        return self.codes.shape[0]

    @classmethod
    def build(
        cls, item_embeddings: torch.Tensor, levels: int = 3, codebook_size: int | Sequence[int] = 256,
        collision: Collision = "extra_level", iters: int = 20, seed: int = 0,
        chunk_size: int | None = None, init_sample: int | None = None,
    ) -> SemanticIds:
        """Residual k-means on rows ``1..`` of ``item_embeddings [num_items, d]`` (row 0 is padding)."""
        x = item_embeddings[1:].float()
        raw, books = residual_kmeans(x, levels, codebook_size, iters, seed, chunk_size, init_sample)
        sizes = [b.shape[0] for b in books]
        stats: dict[str, Any] = collision_stats(raw, sizes)
        codes = resolve_collisions(raw, x, books, collision)
        if collision == "extra_level":
            sizes.append(int(codes[:, -1].max()) + 1)
        stats |= code_stats(codes, sizes)
        padded = torch.cat([codes.new_full((1, codes.shape[1]), -1), codes])
        return cls(padded, tuple(sizes), books, collision, stats)

    def trie(self) -> PrefixTrie:
        return PrefixTrie(self.codes, self.codebook_sizes)

    def item_of(self, sids: torch.Tensor) -> torch.Tensor:
        """Item index of each full SID ``[..., L] -> [...]``; ``-1`` where no item has that SID.

        Packed keys of all SIDs are sorted once (on first use; do not mutate ``codes`` afterwards), then
        each query is one ``searchsorted``.
        """
        if not hasattr(self, "_lookup"):
            valid = _in_range(self.codes, self.codebook_sizes)
            keys = pack(self.codes[valid], self.codebook_sizes)
            order = torch.argsort(keys)
            self._lookup = (keys[order], valid.nonzero().squeeze(1)[order])
        keys, items = (t.to(sids.device) for t in self._lookup)
        if len(keys) == 0:
            return torch.full(sids.shape[:-1], -1, dtype=torch.long, device=sids.device)
        ok = _in_range(sids, self.codebook_sizes)
        q = pack(sids.clamp_min(0), self.codebook_sizes)
        pos = torch.searchsorted(keys, q).clamp(max=len(keys) - 1)
        return torch.where(ok & (keys[pos] == q), items[pos], -1)

    def save(self, folder: str | Path) -> None:
        """``semantic_ids.safetensors`` (codes, codebook_<l>) + ``semantic_ids.json`` (sizes, method, stats)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"codes": self.codes.contiguous().cpu()}
        tensors |= {f"codebook_{l}": b.contiguous().cpu() for l, b in enumerate(self.codebooks)}
        save_file(tensors, str(folder / "semantic_ids.safetensors"))
        meta = {"format": 1, "codebook_sizes": list(self.codebook_sizes), "num_codebooks": len(self.codebooks),
                "collision": self.collision, "stats": self.stats}
        (folder / "semantic_ids.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> SemanticIds:
        folder = Path(folder)
        meta = json.loads((folder / "semantic_ids.json").read_text())
        t = load_file(str(folder / "semantic_ids.safetensors"))
        books = [t[f"codebook_{l}"] for l in range(meta["num_codebooks"])]
        return cls(t["codes"], tuple(meta["codebook_sizes"]), books, meta["collision"], meta["stats"])
