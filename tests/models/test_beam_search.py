"""Constrained beam search against brute force over a small SID space, with a tabular step_fn."""

from __future__ import annotations

import itertools

import pytest
import torch

from recsys.models.beam_search import beam_search_items, constrained_beam_search, reorder_state
from recsys.models.semantic_ids import PrefixTrie, SemanticIds, pack

SIZES = [4, 3, 5]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _valid_codes(n: int = 25, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    space = torch.tensor(list(itertools.product(*map(range, SIZES))))
    return space[torch.randperm(len(space), generator=g)[:n]]


class Tabular:
    """A fixed model per batch row: log p(t | prefix) = table[l][row, key(prefix), t] (normalised over all t).

    The row comes from ``state["row"]``, so a wrong state reordering gives wrong scores; ``state["hist"]``
    records the tokens fed so far and is checked against the prefix at every call.
    """

    def __init__(self, batch: int, seed: int = 0, temperature: float = 1.0):
        g = torch.Generator().manual_seed(seed)
        self.tables = [
            torch.log_softmax(torch.randn(batch, int(torch.tensor(SIZES[:l]).prod()), SIZES[l], generator=g) / temperature, -1)
            for l in range(len(SIZES))
        ]
        self.calls = 0

    def initial_state(self, batch: int) -> dict:
        return {"row": torch.arange(batch), "nested": [(torch.zeros(batch, len(SIZES), dtype=torch.long),)], "tag": "x"}

    def step(self, prefix: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        l = prefix.shape[1]
        hist = state["nested"][0][0]
        assert state["tag"] == "x" and hist.shape[0] == prefix.shape[0] == state["row"].shape[0]
        assert torch.equal(hist[:, : max(l - 1, 0)], prefix[:, : max(l - 1, 0)]), "state not reordered with the beams"
        if l:
            hist = hist.clone()
            hist[:, l - 1] = prefix[:, -1]
        self.calls += 1
        logp = self.tables[l][state["row"], pack(prefix, SIZES[:l])]
        return logp, {"row": state["row"], "nested": [(hist,)], "tag": "x"}

    def score(self, row: int, sid: tuple[int, ...]) -> float:
        return sum(float(self.tables[l][row, pack(torch.tensor(sid[:l]), SIZES[:l]), sid[l]]) for l in range(len(SIZES)))


def _brute_force(model: Tabular, row: int, codes: torch.Tensor) -> list[tuple[float, tuple[int, ...]]]:
    return sorted(((model.score(row, tuple(c)), tuple(c)) for c in codes.tolist()), reverse=True)


def test_full_width_equals_brute_force_top_k():
    codes, batch = _valid_codes(), 3
    model, trie = Tabular(batch), PrefixTrie(codes, SIZES)
    sids, scores = constrained_beam_search(model.step, batch, 3, SIZES, len(codes), trie, state=model.initial_state(batch))
    assert sids.shape == (batch, 25, 3) and scores.shape == (batch, 25)
    assert model.calls == 3
    for b in range(batch):
        want = _brute_force(model, b, codes)
        assert [tuple(s) for s in sids[b].tolist()] == [sid for _, sid in want]
        torch.testing.assert_close(scores[b], torch.tensor([s for s, _ in want]))


def test_top_beam_is_argmax_and_beams_are_consistent():
    codes, batch = _valid_codes(40, seed=1), 4
    model, trie = Tabular(batch, seed=1, temperature=0.3), PrefixTrie(codes, SIZES)
    for width in (1, 5, 12):
        sids, scores = constrained_beam_search(model.step, batch, 3, SIZES, width, trie, state=model.initial_state(batch))
        assert trie.contains(sids).all()
        assert (scores[:, :-1] >= scores[:, 1:]).all()
        for b in range(batch):
            want = _brute_force(model, b, codes)
            got = [model.score(b, tuple(s)) for s in sids[b].tolist()]
            torch.testing.assert_close(scores[b], torch.tensor(got))  # score = sum of step log-probs
            assert len(set(map(tuple, sids[b].tolist()))) == width  # distinct beams
            assert all(g <= w + 1e-5 for g, (w, _) in zip(got, want))  # never beats the true top-k
            if width >= max(trie.num_prefixes(l) for l in range(3)):  # nothing pruned before the last step
                assert [tuple(s) for s in sids[b].tolist()] == [sid for _, sid in want[:width]]
    assert max(trie.num_prefixes(l) for l in range(3)) <= 12  # so width 12 was checked exactly


def test_width_beyond_valid_sids_pads_with_minus_inf():
    codes = _valid_codes(6, seed=2)
    model, trie = Tabular(2, seed=2), PrefixTrie(codes, SIZES)
    sids, scores = constrained_beam_search(model.step, 2, 3, SIZES, 10, trie, state=model.initial_state(2))
    assert torch.isfinite(scores[:, :6]).all() and torch.isneginf(scores[:, 6:]).all()
    assert (sids[:, 6:] == -1).all() and trie.contains(sids[:, :6]).all()
    assert {tuple(s) for s in sids[0, :6].tolist()} == {tuple(c) for c in codes.tolist()}


def test_state_with_leading_dim_batch_times_beam_is_used_as_is():
    codes, batch, width = _valid_codes(), 2, 4
    model, trie = Tabular(batch), PrefixTrie(codes, SIZES)
    expanded = reorder_state(model.initial_state(batch), torch.arange(batch).repeat_interleave(width))
    a = constrained_beam_search(model.step, batch, 3, SIZES, width, trie, state=expanded)
    b = constrained_beam_search(model.step, batch, 3, SIZES, width, trie, state=model.initial_state(batch))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_first_step_per_row_gives_the_same_beams_with_one_row_per_batch_row():
    codes, batch, width = _valid_codes(40, seed=3), 3, 6
    model, trie = Tabular(batch, seed=3), PrefixTrie(codes, SIZES)
    rows_seen = []

    def step(prefix, state):
        rows_seen.append(prefix.shape[0])
        return model.step(prefix, state)

    a = constrained_beam_search(step, batch, 3, SIZES, width, trie, state=model.initial_state(batch),
                                first_step_per_row=True)
    b = constrained_beam_search(model.step, batch, 3, SIZES, width, trie, state=model.initial_state(batch))
    assert rows_seen == [batch, batch * width, batch * width]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="leading dim 3"):
        constrained_beam_search(step, batch, 3, SIZES, width, trie, first_step_per_row=True,
                                state=reorder_state(model.initial_state(batch), torch.arange(batch).repeat_interleave(width)))


def test_reorder_state_keeps_structure():
    st = {"a": (torch.arange(3), [torch.arange(6).view(3, 2)]), "n": None, "k": 7}
    out = reorder_state(st, torch.tensor([1, 1, 0]))
    assert out["a"][0].tolist() == [1, 1, 0] and out["a"][1][0].tolist() == [[2, 3], [2, 3], [0, 1]]
    assert isinstance(out["a"], tuple) and out["n"] is None and out["k"] == 7


def test_beam_search_items_maps_to_items():
    torch.manual_seed(0)
    sids = SemanticIds.build(torch.randn(13, 4), levels=2, codebook_size=[3, 3], iters=3)  # 12 items
    c = sids.codebook_sizes
    g = torch.Generator().manual_seed(3)
    tables = [torch.log_softmax(torch.randn(2, int(torch.tensor(c[:l]).prod()), c[l], generator=g), -1) for l in range(3)]

    def step(prefix: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        l = prefix.shape[1]
        return tables[l][state, pack(prefix, c[:l])], state

    items, scores = beam_search_items(step, sids, 2, 15, state=torch.arange(2))
    assert items.shape == (2, 15)
    assert (items[:, 12:] == -1).all() and torch.isneginf(scores[:, 12:]).all()
    assert sorted(items[0, :12].tolist()) == list(range(1, 13))
    for b in range(2):
        want = [sum(float(tables[l][b, pack(sids.codes[i, :l], c[:l]), sids.codes[i, l]]) for l in range(3)) for i in items[b, :12].tolist()]
        torch.testing.assert_close(scores[b, :12], torch.tensor(want))
