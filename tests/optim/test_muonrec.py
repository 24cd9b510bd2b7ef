"""MuonRec numerics and behaviour: Newton-Schulz vs the SVD polar factor, parity with torch.optim.Muon
and torch.optim.AdamW, exact resume, presets, edge cases, and use as a Lightning optimizer."""

from __future__ import annotations

import copy

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection

from recsys.optim import MuonRec, build_param_groups, orthogonalize
from recsys.optim.newton_schulz import ns_dtype
from recsys.optim.schedules import warmup_cosine


def _quintic5(x):
    for _ in range(5):
        x = 3.4445 * x - 4.7750 * x**3 + 2.0315 * x**5
    return x


def _band(lo: float) -> tuple[float, float]:
    """Range of the five-step quintic map over normalized singular values in [lo, 1]."""
    x = _quintic5(np.linspace(lo, 1.0, 100_001))
    return float(x.min()), float(x.max())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(64, 64), (32, 96), (128, 48)])
def test_newton_schulz_against_float64_svd_polar_factor(shape, dtype):
    torch.manual_seed(0)
    g = torch.randn(*shape, dtype=torch.float64)
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    normalized = (s / torch.linalg.matrix_norm(g)).numpy()
    o = orthogonalize(g, dtype=dtype)
    assert o.dtype == dtype
    o = o.double()
    # Same singular vectors as the polar factor U V^T: U^T O V is diagonal up to bf16 rounding ...
    core = u.T @ o @ vh.T
    off = core - torch.diag(torch.diagonal(core))
    assert off.norm() / torch.diagonal(core).norm() < 0.03
    # ... and each singular value went through the five-step quintic map p(p(p(p(p(s))))), bf16 aside
    got = torch.diagonal(core).numpy()
    assert np.abs(got - _quintic5(normalized)).max() < 0.05
    # the documented band: normalized singular values in [0.01, 1] land in [0.68, 1.14]
    lo, hi = _band(0.01)
    assert 0.68 <= lo and hi <= 1.14
    well = normalized >= 0.01
    assert well.mean() > 0.8 and (got[well] > lo - 0.02).all() and (got[well] < hi + 0.02).all()
    # an exact polar factor would have every singular value 1; NS5 is only within the band
    polar = u @ vh
    assert (o - polar).norm() / polar.norm() < 0.35


def test_batched_equals_one_by_one():
    torch.manual_seed(1)
    stack = torch.randn(5, 16, 40)
    batched = orthogonalize(stack).float()
    single = torch.stack([orthogonalize(m) for m in stack]).float()
    assert torch.allclose(batched, single, atol=2e-2)


def test_newton_schulz_dtype_follows_the_hardware_and_float32_is_more_exact(monkeypatch):
    """The default dtype is bf16 on accelerators and on CPUs with bf16 matmul instructions, float32 on other
    CPUs (which emulate bf16 matmuls); the float32 iteration follows the exact (float64) one closely, the bf16
    one only within bf16 rounding."""
    assert ns_dtype("cuda") == torch.bfloat16
    for amx, avx512_bf16, want in ((False, False, torch.float32), (True, False, torch.bfloat16),
                                   (False, True, torch.bfloat16)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        assert ns_dtype("cpu") == want
        assert orthogonalize(torch.randn(3, 5)).dtype == want
    monkeypatch.undo()
    torch.manual_seed(3)
    g = torch.randn(4, 48, 80)
    exact = orthogonalize(g.double(), dtype=torch.float64)
    err32 = (orthogonalize(g, dtype=torch.float32).double() - exact).norm() / exact.norm()
    err16 = (orthogonalize(g, dtype=torch.bfloat16).double() - exact).norm() / exact.norm()
    assert err32 < 1e-5 < 1e-3 < err16


def test_a_state_dict_saved_before_ns_dtype_loads_with_its_default():
    ps = _matrices(6, [(8, 12)])
    opt = MuonRec([{"params": ps, "use_muon": True, "lr": 0.02}])
    _drive(ps, opt, 1, seed=2)
    saved = opt.state_dict()
    del saved["param_groups"][0]["ns_dtype"]  # as written by a MuonRec without the option
    resumed = MuonRec([{"params": ps, "use_muon": True, "lr": 0.02}])
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["ns_dtype"] == "auto"
    _drive(ps, resumed, 1, seed=3)  # steps without a KeyError


@pytest.mark.parametrize("dtype", ["auto", "float32", "bfloat16"])
def test_muonrec_ns_dtype_option(dtype):
    ps = _matrices(4, [(16, 24), (24, 16)])
    opt = MuonRec([{"params": ps, "use_muon": True, "lr": 0.02, "ns_dtype": dtype}])
    _drive(ps, opt, 2, seed=1)
    ref = _matrices(4, [(16, 24), (24, 16)])
    want = str(ns_dtype("cpu")).removeprefix("torch.") if dtype == "auto" else dtype
    _drive(ref, MuonRec([{"params": ref, "use_muon": True, "lr": 0.02, "ns_dtype": want}]), 2, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(ps, ref, strict=True))  # auto is ns_dtype("cpu")
    with pytest.raises(ValueError, match="ns_dtype"):
        MuonRec([{"params": _matrices(0, [(4, 4)]), "use_muon": True, "lr": 0.02, "ns_dtype": "float16"}])


def _matrices(seed: int, shapes: list[tuple[int, int]], dtype=torch.float32) -> list[nn.Parameter]:
    torch.manual_seed(seed)
    return [nn.Parameter(torch.randn(*s, dtype=dtype)) for s in shapes]


def _drive(params: list[nn.Parameter], optimizer: torch.optim.Optimizer, steps: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        optimizer.step()


@pytest.mark.parametrize("ns", ["bfloat16", "auto"])
@pytest.mark.parametrize("adjust", ["original", "match_rms_adamw"])
def test_muon_family_matches_torch_muon(adjust, ns):
    shapes = [(32, 32), (32, 32), (16, 48), (64, 24)]
    ours, ref = _matrices(0, shapes), _matrices(0, shapes)
    start = [p.detach().clone() for p in ours]
    kw = dict(lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True)
    _drive(ours, MuonRec([{"params": ours, "use_muon": True, "adjust_lr": adjust, "ns_dtype": ns, **kw}]), 4, seed=5)
    _drive(ref, torch.optim.Muon(ref, adjust_lr_fn=adjust, **kw), 4, seed=5)
    for a, b, p0 in zip(ours, ref, start, strict=True):
        moved = (b - p0).norm()
        assert moved > 0
        assert (a - b).norm() / moved < 1e-2  # bf16 Newton-Schulz: agreement within bf16 rounding


def test_adamw_family_matches_torch_adamw_exactly():
    shapes = [(7, 5), (5,), (3, 2, 4)]
    ours, ref = _matrices(2, shapes), _matrices(2, shapes)
    kw = dict(lr=3e-3, weight_decay=0.05, betas=(0.9, 0.95), eps=1e-8)
    _drive(ours, MuonRec([{"params": ours, "use_muon": False, **kw}]), 6, seed=3)
    _drive(ref, torch.optim.AdamW(ref, **kw), 6, seed=3)
    for a, b in zip(ours, ref, strict=True):
        assert torch.equal(a, b)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.conv = nn.Conv2d(2, 3, 3)  # a 4-D weight: flattened to [3, 18] for Muon
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 20)
        self.frozen = nn.Linear(8, 8)
        self.unused = nn.Linear(8, 8)  # never gets a gradient
        self.frozen.requires_grad_(False)

    def forward(self, ids: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids) + self.conv(img).mean(dim=(2, 3)).sum(-1, keepdim=True)
        return self.head(self.norm(self.proj(x)) + self.frozen(x))


def _loss(model: Tiny, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 20, (16,), generator=gen)
    img = torch.randn(16, 2, 5, 5, generator=gen)
    return nn.functional.cross_entropy(model(ids, img), torch.randint(0, 20, (16,), generator=gen))


def _train(model: Tiny, opt: torch.optim.Optimizer, seeds: range) -> None:
    for seed in seeds:
        opt.zero_grad()
        _loss(model, seed).backward()
        opt.step()


def test_state_dict_resume_is_exact():
    torch.manual_seed(0)
    model = Tiny()
    opt = MuonRec.from_model(model, muon_lr=0.02, adamw_lr=1e-2, muon_weight_decay=0.01, adamw_weight_decay=0.01)
    _train(model, opt, range(3))
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    _train(model, opt, range(3, 6))
    resumed = Tiny()
    resumed.load_state_dict(saved_model)
    opt2 = MuonRec.from_model(resumed, muon_lr=0.02, adamw_lr=1e-2, muon_weight_decay=0.01, adamw_weight_decay=0.01)
    opt2.load_state_dict(saved_opt)
    _train(resumed, opt2, range(3, 6))
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_presets_and_overrides():
    model = Tiny()
    names = {g["use_muon"]: set(g["param_names"]) for g in build_param_groups(model, "muonrec")}
    assert names[True] == {"conv.weight", "proj.weight", "head.weight", "unused.weight"}
    assert "emb.weight" in names[False] and "norm.weight" in names[False] and "frozen.weight" not in names[False]
    keller = {g["use_muon"]: set(g["param_names"]) for g in build_param_groups(model, "keller")}
    assert "head.weight" in keller[False] and "proj.weight" in keller[True]
    forced = {g["use_muon"]: set(g["param_names"])
              for g in build_param_groups(model, "muonrec", overrides={r"^proj\.": "adamw"})}
    assert "proj.weight" in forced[False]
    with pytest.raises(ValueError, match="needs >= 2 dims"):
        build_param_groups(model, "muonrec", overrides={r"bias": "muon"})


def test_llm_preset():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed_tokens = nn.Embedding(30, 8)
            self.q_proj = nn.Linear(8, 8, bias=False)
            self.up_proj = nn.Linear(8, 16, bias=False)
            self.gate = nn.Linear(8, 8, bias=False)
            self.input_layernorm = nn.LayerNorm(8)
            self.lm_head = nn.Linear(8, 30, bias=False)

    groups = {g["use_muon"]: set(g["param_names"]) for g in build_param_groups(Block(), "llm")}
    assert groups[True] == {"q_proj.weight", "up_proj.weight"}
    assert {"embed_tokens.weight", "gate.weight", "lm_head.weight", "input_layernorm.weight"} <= groups[False]


def test_torchrec_tables_go_to_adamw():
    ec = EmbeddingCollection(tables=[EmbeddingConfig(name="t", embedding_dim=8, num_embeddings=10, feature_names=["f"])],
                             device=torch.device("cpu"))
    model = nn.ModuleDict({"ec": ec, "mlp": nn.Linear(8, 8)})
    groups = {g["use_muon"]: g["param_names"] for g in build_param_groups(model, "muonrec")}
    assert groups[True] == ["mlp.weight"] and "ec.embeddings.t.weight" in groups[False]


def test_edge_cases_no_grad_zero_grad_bf16_sparse():
    torch.manual_seed(0)
    model = Tiny()
    opt = MuonRec.from_model(model, muon_lr=0.02, adamw_lr=1e-2)
    before = model.unused.weight.detach().clone()
    _train(model, opt, range(2))
    assert torch.equal(model.unused.weight, before) and model.unused.weight not in opt.state
    # all-zero gradients on a fresh optimizer: finite, and nothing moves (no momentum, no weight decay)
    fresh = Tiny()
    before_all = copy.deepcopy(fresh.state_dict())
    opt_zero = MuonRec.from_model(fresh, muon_lr=0.02, adamw_lr=1e-2)
    for p in fresh.parameters():
        p.grad = torch.zeros_like(p)
    opt_zero.step()
    for name, value in fresh.state_dict().items():
        assert torch.isfinite(value).all() and torch.equal(value, before_all[name]), name
    # bf16 parameters train and stay finite
    half = Tiny().to(torch.bfloat16)
    opt_half = MuonRec.from_model(half, muon_lr=0.02, adamw_lr=1e-2)
    start = half.proj.weight.detach().clone()
    for seed in range(2):
        opt_half.zero_grad()
        gen = torch.Generator().manual_seed(seed)
        ids, img = torch.randint(0, 20, (8,), generator=gen), torch.randn(8, 2, 5, 5, generator=gen).bfloat16()
        half(ids, img).float().logsumexp(-1).mean().backward()
        opt_half.step()
    assert not torch.equal(half.proj.weight, start) and all(torch.isfinite(p).all() for p in half.parameters())
    # sparse gradients get a clear error naming the parameter
    sparse = nn.ModuleDict({"emb": nn.Embedding(10, 4, sparse=True), "lin": nn.Linear(4, 4)})
    opt_sparse = MuonRec.from_model(sparse)
    sparse["lin"](sparse["emb"](torch.tensor([1, 2]))).sum().backward()
    with pytest.raises(RuntimeError, match="'emb.weight' has a sparse gradient"):
        opt_sparse.step()


def test_match_adamw_rms_gives_adamw_like_update_size():
    p = nn.Parameter(torch.zeros(64, 256))
    opt = MuonRec([{"params": [p], "use_muon": True, "lr": 1.0, "adjust_lr": "match_rms_adamw", "momentum": 0.0}])
    p.grad = torch.randn(64, 256)
    opt.step()
    rms = float(p.detach().pow(2).mean().sqrt())
    assert 0.2 * 0.68 <= rms <= 0.2 * 1.21  # 0.2 x the RMS of an orthogonal update, within the NS band


class LitTiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = Tiny()
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        loss = _loss(self.model, seed=batch_idx % 4)
        self.losses.append(float(loss.detach()))
        return loss

    def train_dataloader(self):
        return torch.utils.data.DataLoader(range(40), batch_size=1)

    def configure_optimizers(self):
        opt = MuonRec.from_model(self.model, muon_lr=0.02, adamw_lr=1e-2)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": warmup_cosine(opt, 5, 40, min_ratio=0.1), "interval": "step"}}


def test_one_optimizer_under_lightning_automatic_optimization(tmp_path):
    torch.manual_seed(0)
    module = LitTiny()
    trainer = L.Trainer(max_epochs=1, gradient_clip_val=1.0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module)
    assert len(trainer.optimizers) == 1 and isinstance(trainer.optimizers[0], MuonRec)
    assert np.mean(module.losses[-8:]) < np.mean(module.losses[:8])
    lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]
    assert lrs[0] / lrs[1] == pytest.approx(0.02 / 1e-2)  # the schedule scales both families alike
