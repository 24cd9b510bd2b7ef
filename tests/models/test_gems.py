"""GEMs: streams, indexer top-K, incremental lifecycle cache, KV-cached constrained beam search, training."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from recsys.data.lifelong import LifelongDataModule
from recsys.models.gems import LifecycleCache
from recsys.models.gems_module import GEMsModule


@pytest.fixture(scope="module")
def data(prepared_lifelong):
    dm = LifelongDataModule(prepared_lifelong, recent=8, mid=32, max_train_per_user=8, batch_size=16,
                            eval_batch_size=8, sid_levels=2, sid_codebook=16)
    return dm, dm.semantic_ids_path


def module(data, **kw):
    dm, path = data
    torch.manual_seed(0)
    defaults = dict(dim=16, heads=2, layers=2, encoder_layers=1, top_k=4, summary_tokens=3, beam_width=12,
                    ks=[5, 10], dropout=0.0)
    defaults["item_attributes"] = dm.item_attributes_path
    defaults["play_time"] = dm.event_play_time  # as `recsys fit` links them
    return GEMsModule(path, dm.feature_cardinalities, **{**defaults, **kw})


def test_topk_with_all_keys_equals_dense_attention(data):
    dm, _ = data
    m = module(data, top_k=1000).eval()
    batch = dm.samples("train").__getitems__(list(range(6)))
    with torch.no_grad():
        mem = m.model.encode(batch.features, batch.ages, batch.actions, plays=batch.plays)
        x = m.model.token_inputs(m.sid_codes[batch.targets][:, :-1])
        dense, _ = m.model.decode(x, mem, stage=1)
        m.model.config.top_k = 32  # == the mid window: the top-K path selects every key
        topk, _ = m.model.decode(x, mem, stage=3)
        assert torch.allclose(dense, topk, atol=1e-5)
        m.model.config.top_k = 2
        sparse, _ = m.model.decode(x, mem, stage=3)
        assert not torch.allclose(dense, sparse, atol=1e-4)


def test_decoding_uses_the_shared_read_at_beam_steps_only(data):
    """At a beam-search step (one new position, several beams per user) the beams read the shared keys; a
    teacher-forced pass (several positions: a later token must not choose an earlier one's keys) keeps the
    per-query top-K."""
    dm, _ = data
    m = module(data, top_k=2).eval()
    batch = dm.samples("train").__getitems__(list(range(3)))
    beams = 4
    with torch.no_grad():
        mem = m.model.encode(batch.features, batch.ages, batch.actions, plays=batch.plays)
        step = torch.randn(3 * beams, 1, m.model.config.dim)
        dense, _ = m.model.decode(step, mem, stage=1, beams=beams)
        per_query, _ = m.model.decode(step, mem, stage=3, beams=beams)
        m.model.config.shared_top_k = 32  # the whole mid window: the shared read is the dense read
        torch.testing.assert_close(m.model.decode(step, mem, stage=3, beams=beams)[0], dense, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(per_query, dense, atol=1e-4)
        x = m.model.token_inputs(m.sid_codes[batch.targets][:, :-1])
        forced = m.model.decode(x, mem, stage=3)[0]
        m.model.config.shared_top_k = None
        torch.testing.assert_close(m.model.decode(x, mem, stage=3)[0], forced)


def test_mean_fusion_scales_the_sum_of_the_stream_updates(data):
    """``fusion="mean"`` divides the streams' summed update by their number: with one stream it is the sum,
    with three it differs; the value round-trips through the module's hyperparameters."""
    dm, _ = data
    batch = dm.samples("train").__getitems__(list(range(4)))

    def decoded(**kw):
        m = module(data, **kw).eval()
        with torch.no_grad():
            mem = m.model.encode(batch.features, batch.ages, batch.actions, plays=batch.plays)
            return m.model.decode(m.model.token_inputs(m.sid_codes[batch.targets][:, :-1]), mem)[0], m

    one_sum, _ = decoded(streams=["recent"])
    one_mean, m = decoded(streams=["recent"], fusion="mean")
    assert m.model.config.fusion == "mean"
    torch.testing.assert_close(one_sum, one_mean)
    three_sum, _ = decoded()
    three_mean, _ = decoded(fusion="mean")
    assert not torch.allclose(three_sum, three_mean, atol=1e-4)


def test_gated_fusion_starts_from_the_first_stream_and_learns_the_others(data):
    """``fusion="gated"``: at initialisation the longer streams' gains are 0, so their memories do not move
    the decoder output; with every gain at 1 it is the plain sum of the same weights; the gains get gradients."""
    dm, _ = data
    batch = dm.samples("train").__getitems__(list(range(4)))
    m = module(data, fusion="gated").eval()
    ref = module(data)  # same seed: the same weights, summed
    ref.load_state_dict({k: v for k, v in m.state_dict().items() if ".gate." not in k})
    x = m.model.token_inputs(m.sid_codes[batch.targets][:, :-1])
    mem = m.model.encode(batch.features, batch.ages, batch.actions, plays=batch.plays)
    gated, _ = m.model.decode(x, mem)
    moved = {s: {**v, "memory": v["memory"] + 1.0} if s != "recent" else v for s, v in mem.items()}
    with torch.no_grad():
        torch.testing.assert_close(m.model.decode(x, moved)[0], gated)
    gated.square().sum().backward()
    gains = m.model.blocks[0].gate
    assert gains["mid"].grad.abs().sum() > 0 and gains["life"].grad.abs().sum() > 0
    with torch.no_grad():
        for g in gains.values():
            g.fill_(1.0)
        for block in m.model.blocks[1:]:
            for g in block.gate.values():
                g.fill_(1.0)
        summed, _ = ref.eval().model.decode(x, ref.model.encode(batch.features, batch.ages, batch.actions, plays=batch.plays))
        torch.testing.assert_close(m.model.decode(x, mem)[0], summed)
    with pytest.raises(ValueError, match="fusion"):
        module(data, fusion="max")


def test_daily_age_buckets_tell_a_week_from_eight_days(data):
    """``age_buckets="daily"``: events 7.5 and 8.5 days old get different age embeddings (with ``log2``
    they share the 7-14 day bucket); the choice round-trips through the checkpoint's hyperparameters."""
    from recsys.models.gems import GEMsConfig

    week, eight = torch.tensor([7.5 * 24]), torch.tensor([8.5 * 24])
    for buckets, same in (("log2", True), ("daily", False)):
        m = module(data, age_buckets=buckets)
        events = m.model.events
        assert (torch.bucketize(week, events.edges) == torch.bucketize(eight, events.edges)).item() is same
        assert events.age.num_embeddings == len(events.edges) + 1
        assert GEMsConfig.from_hparams(dict(m.hparams), m.codebook_sizes).age_buckets == buckets
    with pytest.raises(ValueError, match="age_buckets"):
        module(data, age_buckets="hourly")


def test_topk_attention_equals_the_per_query_reference():
    """The fused gather kernel equals the plain per-query reference, forward and backward, with padding keys,
    a query whose selected keys are all padding, and keys/values given contiguous (as the exported serving
    programs pass them) instead of as views of the projection."""
    from recsys.models.gems import GEMs, CrossAttention

    torch.manual_seed(0)
    cross = CrossAttention(16, 2, 0.0).eval()
    b, t, m, kk = 3, 5, 40, 4
    k, v = cross.project(torch.randn(b, m, 16))
    x = torch.randn(b, t, 16, requires_grad=True)
    mask = torch.rand(b, m) > 0.2
    mask[2, 10:] = False
    top = torch.stack([torch.randperm(m)[:kk] for _ in range(b * t)]).view(b, t, kk)
    top[1] = top[1, :1]  # sample 1: every query picks the same keys
    top[2, 0] = torch.arange(30, 30 + kk)  # only padding keys
    fast = GEMs._topk_attention(cross, x, k, v, top, mask)
    ref = GEMs._topk_attention_reference(cross, x, k, v, top, mask)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    assert fast[2, 0].abs().max() == cross.out.bias.abs().max()  # read nothing: only the output bias
    grad_fast = torch.autograd.grad(fast.square().sum(), [x, cross.kv.weight], retain_graph=True)
    grad_ref = torch.autograd.grad(ref.square().sum(), [x, cross.kv.weight])
    for g_fast, g_ref in zip(grad_fast, grad_ref):
        torch.testing.assert_close(g_fast, g_ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        contiguous = GEMs._topk_attention(cross, x, k.contiguous(), v.contiguous(), top, mask)
    torch.testing.assert_close(contiguous, ref.detach(), atol=1e-5, rtol=1e-5)


def test_indexer_scores_follow_the_lightning_indexer_formula():
    """I[t, s] = sum_j w[t, j] * relu(q[t, j] . k[s]) (DSA), computed head by head in plain loops."""
    from recsys.models.gems import Indexer

    torch.manual_seed(0)
    indexer = Indexer(16, 3, 8)
    queries, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    keys = indexer.keys(memory)
    q = indexer.q(queries).view(2, 5, 3, 8)
    w = indexer.w(queries)
    expected = sum(w[..., j, None] * torch.relu(q[:, :, j] @ keys.transpose(1, 2)) for j in range(3))
    torch.testing.assert_close(indexer(queries, keys), expected)


def test_fused_cross_attention_equals_the_explicit_path():
    """The fused path (no probabilities asked) equals the explicit one, with per-query and shared masks,
    padding keys, and a sample whose memory is empty (its output is then exactly the projected zero)."""
    from recsys.models.gems import CrossAttention

    torch.manual_seed(0)
    cross = CrossAttention(16, 2, 0.0).eval()
    b, t, m = 3, 5, 12
    k, v = cross.project(torch.randn(b, m, 16))
    x = torch.randn(b, t, 16)
    for mask in (torch.rand(b, 1, m) > 0.3, torch.rand(b, t, m) > 0.3):
        mask[2] = False  # an empty memory
        with torch.no_grad():
            fused, none = cross(x, k, v, mask)
            explicit, probs = cross(x, k, v, mask, return_probs=True)
        assert none is None and probs is not None
        torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fused[2], cross.out.bias.expand(t, -1))


def test_lifecycle_cache_is_incremental(data):
    m = module(data)
    summarizer = m.model.summarizer
    events = torch.randn(10, 16)
    cache = LifecycleCache(summarizer, 16)
    cache.add(7, events[:4])
    cache.add(7, events[4:])  # events aging out later fold in without recomputing the old ones
    total, count = summarizer.state(events, torch.tensor([0, 10]))
    with torch.no_grad():
        assert torch.allclose(cache.summaries([7]), summarizer.summaries(total, count), atol=1e-5)
        assert torch.equal(cache.summaries([99]), torch.zeros(1, 3, 16))  # no lifecycle yet


def test_encode_with_cached_lifecycle_equals_encoding_the_events(data):
    dm, _ = data
    m = module(data).eval()
    batch = dm.samples("test").__getitems__(list(range(4)))
    with torch.no_grad():
        full = m.model.encode(batch.features, batch.ages, batch.actions, plays=batch.plays)
        life = full["life"]
        cache = LifecycleCache(m.model.summarizer, 16)
        for row in range(4):  # one cache entry per sample (samples of one user have different lifecycles)
            lo, hi = int(life["offsets"][row]), int(life["offsets"][row + 1])
            cache.add(row, life["events"][lo:hi])
        served = m.model.encode(batch.features, batch.ages, batch.actions, plays=batch.plays, lifecycle=cache.state(range(4)))
    assert life["mask"].any()  # the fixture's users do have lifecycle events
    assert torch.allclose(served["life"]["memory"], life["memory"], atol=1e-5)
    assert torch.equal(served["life"]["mask"], life["mask"])


def test_lifecycle_state_matches_reference(data):
    summarizer = module(data).model.summarizer
    events = torch.randn(12, 16, requires_grad=True)
    offsets = torch.tensor([0, 5, 5, 12])  # the middle sample has no lifecycle events
    fast, count = summarizer.state(events, offsets)
    ref, ref_count = summarizer.state_reference(events, offsets)
    assert torch.allclose(fast, ref, atol=1e-5) and torch.equal(count, ref_count)
    assert torch.equal(fast[1], torch.zeros(16, 16))
    (g_fast,) = torch.autograd.grad(fast.square().sum(), events)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), events)
    assert torch.allclose(g_fast, g_ref, atol=1e-4)


def test_beam_search_scores_are_teacher_forced_log_probs(data):
    dm, _ = data
    m = module(data).eval()
    batch = dm.samples("valid").__getitems__(list(range(4)))
    items, sids, scores = m.recommend(batch, beam_width=5)
    assert (items >= 0).all()  # constrained: every beam is an item's SID
    assert torch.equal(m.sid_codes[items], sids)
    with torch.no_grad():
        mem = m.model.encode(batch.features, batch.ages, batch.actions, plays=batch.plays)
        flat = sids.reshape(-1, sids.shape[-1])
        rep = {k: {n: v.repeat_interleave(5, 0) for n, v in s.items() if n in ("memory", "mask")} for k, s in mem.items()}
        states, _ = m.model.decode(m.model.token_inputs(flat[:, :-1]), rep, stage=m.stage)
        lp = sum(torch.log_softmax(m.model.level_logits(states[:, lvl], lvl), -1).gather(1, flat[:, lvl:lvl + 1])
                 for lvl in range(flat.shape[1]))
    # the search's score of each beam (KV cache, shared per-user memories, one step at a time) equals the
    # teacher-forced sum of the same tokens' log-probabilities computed in one pass over each beam
    assert torch.allclose(scores.reshape(-1), lp.reshape(-1), atol=1e-4)
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first


def test_events_embed_their_items_tags_and_duration(data):
    """With ``item_attributes`` an event adds the sum of its item's tag embeddings and its duration bucket's
    embedding (ids looked up from the item); the ids are buffers that travel with the state dict."""
    dm, _ = data
    m = module(data).eval()
    events = m.model.events
    assert set(m.model.config.attributes) == {"tags", "duration"}
    items = torch.arange(1, dm.num_items, 97)
    tags, duration = events.attr_tags[items], events.attr_duration[items]
    tables = events.attribute_tables
    want = tables["tags"].weight[tags].sum(1) + tables["duration"].weight[duration[:, 0]]
    want = want - tables["tags"].weight[0] * (tags == 0).sum(1, keepdim=True)  # padding adds 0
    assert bool((tags > 0).any()) and torch.allclose(events.attributes(items), want, atol=1e-6)
    batch = dm.samples("train").__getitems__(list(range(6)))
    with torch.no_grad():
        before = m.model.encode(batch.features, batch.ages, batch.actions, plays=batch.plays)["mid"]["memory"]
        rebuilt = GEMsModule(**m.hparams).eval()
        rebuilt.model.events.attr_tags.zero_()
        rebuilt.load_state_dict(m.state_dict())  # the buffers come back from the state dict
        assert torch.equal(rebuilt.model.events.attr_tags, events.attr_tags)
        events.attr_tags.zero_()
        events.attr_duration.zero_()
        after = m.model.encode(batch.features, batch.ages, batch.actions, plays=batch.plays)["mid"]["memory"]
    assert not torch.allclose(before, after)
    assert "attr_tags" not in dict(module(data, item_attributes=None).model.events.named_buffers())


def test_events_embed_their_play_time(data):
    """``play_time``: an event adds the embedding of its play-time bucket (0 s, or unknown: bucket 0, the
    same as no play times given at all); the batch's plays change what the streams hold."""
    dm, _ = data
    m = module(data).eval()
    assert m.model.config.play_time
    events = m.model.events
    buckets = torch.bucketize(torch.tensor([0.0, 1.5, 3.0, 40.0, 5000.0]), events.play_edges)
    assert buckets.tolist() == [0, 1, 2, 6, len(events.play_edges)]
    batch = dm.samples("train").__getitems__(list(range(6)))
    assert float(batch.plays["mid"].max()) > 0
    with torch.no_grad():
        def mid(plays):
            return m.model.encode(batch.features, batch.ages, batch.actions, plays=plays)["mid"]["memory"]

        given, unknown = mid(batch.plays), mid(None)
        zeros = mid({k: torch.zeros_like(v) for k, v in batch.plays.items()})
    assert torch.equal(unknown, zeros) and not torch.allclose(given, unknown)
    assert module(data, play_time=False).model.events.play is None


def test_trains_evaluates_and_ablates(data, tmp_path):
    dm, _ = data
    for streams in (["recent", "mid", "life"], ["recent"]):
        m = module(data, streams=streams, stage_epochs=[1, 1], optimizer="adamw", lr=3e-3)
        batch = dm.samples("train").__getitems__(list(range(16)))
        opt = m.configure_optimizers()
        first = None
        for _ in range(30):
            loss, parts = m.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            first = first if first is not None else float(parts["ntp"])
        assert float(parts["ntp"]) < 0.5 * first
    m = module(data, stage_epochs=[1, 1], lr_schedule="cosine", warmup_fraction=0.25)
    trainer = L.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    trainer.fit(m, dm)  # epochs 0, 1, 2 run stages 1, 2 and 3
    assert m.stage == 3
    groups = trainer.optimizers[0].param_groups  # MuonRec's two families, each decayed to 10% of its rate
    assert len({g["initial_lr"] for g in groups}) == 2
    assert all(g["lr"] == pytest.approx(0.1 * g["initial_lr"]) for g in groups)
    result = trainer.test(m, dm, verbose=False)[0]
    assert 0 <= result["test/recall@5"] <= result["test/recall@10"] <= 1
    assert result["test/recall_level1"] >= result["test/recall_level2"]


def test_a_checkpoint_is_tested_in_the_stage_it_was_written_in(data, tmp_path):
    """A best checkpoint from stage 1 is tested with stage 1's dense attention, also by the trainer that
    went on to stage 3 (it was validated that way); training follows the epochs again."""
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    dm, _ = data
    seen = []

    class Stages(Callback):
        def on_test_start(self, trainer, pl_module):
            seen.append(pl_module.stage)

    m = module(data, stage_epochs=[1, 1])
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
    trainer = L.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1, logger=False,
                        callbacks=[ckpt, Stages()], enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(m, dm)
    for epoch in (0, 1, 2):
        trainer.test(m, dm, ckpt_path=str(tmp_path / f"epoch={epoch}.ckpt"), verbose=False)
    assert seen == [1, 2, 3]
    trainer.fit_loop.max_epochs = 4
    trainer.fit(m, dm, ckpt_path=str(tmp_path / "epoch=2.ckpt"))
    assert m.checkpoint_epoch is None and m.stage == 3
