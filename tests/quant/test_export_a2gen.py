"""Export A2Gen (fp32 and fp8), score one user's candidates with the runtime, compare with the model."""

from __future__ import annotations

import pytest
import torch

from recsys.data.chain_ranking import ChainDataModule
from recsys.models.a2gen import A2GenModule
from recsys.quant.export import export_a2gen
from recsys.quant.runtime import A2GenRuntime, load_runtime


def _sample_inputs(batch, b: int, cfg: dict):
    """Sample ``b`` of a ChainBatch as the runtime's arguments (one user, one candidate)."""
    feats = batch.features

    def ids(key):
        jt = feats[key]
        return jt.values()[int(jt.offsets()[b]): int(jt.offsets()[b + 1])]

    user = {k: int(ids(k)[0]) for k in cfg["user_keys"]}
    context = {k: int(ids(k)[0]) for k in cfg["context_keys"]}
    candidates = {k: ids(k)[:1] for k in cfg["item_keys"]}
    tags = [ids("tags")] if cfg["has_tags"] else None
    hist = feats["history"]
    lo, hi = int(hist.offsets()[b]), int(hist.offsets()[b + 1])
    history = {k: ids(k) for k in cfg["history_keys"]}
    history |= {"flags": batch.history_flags[lo:hi], "times": batch.history_times[lo:hi]}
    return user, candidates, history, context, tags


@pytest.mark.parametrize("dataset", ["tmall", "kuairand"])
def test_runtime_scores_what_the_model_predicts(dataset, request, tmp_path):
    dm = ChainDataModule(request.getfixturevalue(f"prepared_{dataset}"), max_len=8, batch_size=32)
    dm.setup()
    torch.manual_seed(0)
    module = A2GenModule(dm.feature_cardinalities, dm.spec_dict, dim=16, heads=2).eval()
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        want = module.predict(batch)
    manifests = {p: export_a2gen(module, tmp_path / p, precision=p) for p in ("fp32", "fp8")}
    runtime = load_runtime(tmp_path / "fp32")
    assert isinstance(runtime, A2GenRuntime)
    fp8 = A2GenRuntime.load(tmp_path / "fp8")
    lengths = batch.features["history"].lengths()
    rows = [int(i) for i in torch.argsort(lengths, descending=True)[:3]] + [int(torch.argmin(lengths))]
    for b in rows:  # longest histories and the shortest (possibly empty)
        args = _sample_inputs(batch, b, runtime.config)
        probs, times = runtime.score(*args)
        torch.testing.assert_close(probs[0], want.probs[b], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(times[0], want.times[b], atol=1e-4, rtol=1e-4)
        q_probs, _ = fp8.score(*args)
        assert (q_probs - probs).abs().max() < 0.05
    # several candidates at once = each alone
    user, cand, history, context, tags = _sample_inputs(batch, rows[0], runtime.config)
    many = {k: torch.cat([v, v]) for k, v in cand.items()}
    probs2, _ = runtime.score(user, many, history, context, tags * 2 if tags else None)
    torch.testing.assert_close(probs2[1], probs2[0])
    q = manifests["fp8"]["quantization"]
    assert q["linears"] and q["quantized_bytes_fp8"] <= 0.35 * q["quantized_bytes_fp32"]
    with pytest.raises(ValueError, match="missing feature ids"):
        runtime.score({}, cand)
