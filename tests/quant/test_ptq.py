"""PTQ on the real models: roles, what stays in high precision, report, outputs close to fp32."""

import copy

import pytest
import torch
from torch import nn

from recsys.quant import Fp8Config, Fp8Linear, quantize_fp8
from recsys.quant.ptq import role_of
from recsys.quant.stats import collect_statistics


@pytest.mark.parametrize("name, role", [
    ("model.blocks.0.self_attn.q", "attention"), ("model.blocks.1.cross.mid.kv", "attention"),
    ("model.recent_encoder.0.attn.out", "attention"), ("model.act_cam.v", "attention"),
    ("model.blocks.0.ffn.life.3", "ffn"), ("model.recent_encoder.1.ffn.0", "ffn"), ("model.z.1", "ffn"),
    ("model.gen_cam.mlp.1", "ffn"), ("model.levels.0.specific.3.0", "experts"), ("model.experts.2.4", "experts"),
    ("model.indexer.q", "indexer"), ("model.action_head", "head"), ("model.aux_time_head", "head"),
    ("model.summarizer.k", "other"), ("model.user_proj", "other"), ("model.act_cam.gate", "other"),
])
def test_roles(name, role):
    assert role_of(name) == role


def test_include_exclude_and_size():
    model = nn.ModuleDict({"attn": nn.ModuleDict({"q": nn.Linear(64, 64), "k": nn.Linear(64, 64)}),
                           "user_proj": nn.Linear(64, 64), "tiny": nn.ModuleDict({"ffn": nn.Sequential(nn.Linear(8, 8))})})
    report = quantize_fp8(model, Fp8Config(include=(r"user_proj",), exclude=(r"attn\.k",)))
    assert report.quantized == ["attn.q", "user_proj"]
    reasons = {r.name: r.reason for r in report.rows}
    assert reasons["attn.k"] == "excluded by config" and "smaller" in reasons["tiny.ffn.0"]
    # 64x64 fp32 weight + bias = 16,640 B -> 4,096 B FP8 + 256 B scales + 256 B bias
    assert report.size_ratio() == pytest.approx((4096 + 256 + 256) / 16640)
    assert "2 of 4 linears quantized" in report.to_markdown()


def test_static_scales_need_calibration():
    with pytest.raises(ValueError, match="calibration"):
        quantize_fp8(nn.ModuleDict({"attn": nn.ModuleDict({"q": nn.Linear(32, 32)})}), Fp8Config(activation="static"))


def test_gems_fp8_keeps_beam_search_close(gems_module_and_batch):
    """Quantized GEMs: attention/FFN linears become FP8, the indexer and embeddings do not, and beam search
    returns nearly the same items."""
    module, batch = gems_module_and_batch
    items, _, scores = module.recommend(batch, stage=3)
    stats = collect_statistics(module, lambda: module.recommend(batch, stage=3))
    absmax = {s.name: s.act_absmax for s in stats if s.kind == "linear"}
    for activation in ("dynamic", "static"):
        quant = copy.deepcopy(module)
        report = quantize_fp8(quant, Fp8Config(activation=activation), activation_absmax=absmax)
        names = set(report.quantized)
        assert any(".self_attn.q" in n for n in names) and any(".ffn." in n for n in names)
        assert not any("indexer" in n or "head" in n for n in names)
        assert all(isinstance(quant.get_submodule(n), Fp8Linear) for n in names)
        q_items, _, q_scores = quant.recommend(batch, stage=3)
        top10 = torch.tensor([len(set(a[:10].tolist()) & set(b[:10].tolist())) / 10 for a, b in zip(items, q_items)])
        assert top10.mean() >= 0.8, (activation, top10)
        assert (q_scores[:, 0] - scores[:, 0]).abs().max() < 0.5
