"""MuonRec: one optimizer, Muon for weight matrices and AdamW for everything else.

MuonRec (Shan et al., "Shifting the Optimizer Paradigm Beyond Adam in Scalable Generative Recommendation",
arXiv 2603.00416) trains recommenders with Muon on 2-D weights and Adam(W) on embedding tables and 1-D
parameters; its code (``Muon/muon.py``, ``MuonWithAuxAdam``) keeps both in one optimizer whose parameter
groups carry ``use_muon``. This is that design, so Lightning's automatic optimization (one optimizer per
module) works unchanged.

Muon family (``use_muon=True``), per matrix ``W`` with gradient ``G`` (paper Sec. 3 / ``muon_update``):

    B <- mu B + (1 - mu) G                         momentum (mu = 0.95), kept in float32
    U <- (1 - mu) G + mu B        if nesterov      Nesterov look-ahead, else U <- B
    O <- NS5(U)                                    quintic Newton-Schulz (:mod:`.newton_schulz`), bf16, or
                                                   float32 on CPUs without bf16 matmuls (``ns_dtype``)
    W <- (1 - lr * wd) W - lr * scale * O          decoupled weight decay
    scale = sqrt(max(1, rows / cols))              Keller Jordan's shape factor, or
    scale = 0.2 * sqrt(max(rows, cols))            ``adjust_lr="match_rms_adamw"`` (Moonlight, arXiv
                                                   2502.16982): AdamW's update RMS, so one lr fits both

This is ``torch.optim.Muon``'s update (its ``lerp`` form is the same momentum); weights of 3 or more
dimensions are flattened to ``[shape[0], -1]``. Same-shape matrices are orthogonalized together in one
batched iteration; under data parallelism each rank orthogonalizes its share of them and the results are
all-gathered (the update equals the single-process one, and no rank repeats another's work). AdamW family
(``use_muon=False``): ``torch.optim.AdamW``'s own functional kernel, so it
matches it exactly.

Gradient clipping (e.g. Lightning's ``gradient_clip_val``) acts on the raw gradients before ``step``, so
before the momentum and the orthogonalization; since NS5 normalizes its input, clipping changes a Muon
update only through the momentum mix. LR schedulers scale every group's ``lr``, so the two families keep
their ratio. Parameters without a gradient are skipped; an all-zero gradient gives a zero update (no NaN).

>>> model = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
>>> opt = MuonRec.from_model(model, preset="muonrec", muon_lr=0.02, adamw_lr=1e-3)
>>> [(g["use_muon"], len(g["params"])) for g in opt.param_groups]
[(True, 1), (False, 4)]
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim.adam import adam

from recsys.optim.newton_schulz import EPS, NS_COEFFICIENTS, NS_STEPS, ns_dtype, orthogonalize
from recsys.optim.param_groups import Preset, build_param_groups

MUON_DEFAULTS: dict[str, Any] = {
    "momentum": 0.95,
    "nesterov": True,
    "ns_steps": NS_STEPS,
    "ns_coefficients": NS_COEFFICIENTS,
    "ns_eps": EPS,
    "adjust_lr": "original",
    "ns_dtype": "auto",  # "auto" (newton_schulz.ns_dtype: float32 on CPUs without bf16 matmuls, else bf16), "bfloat16", "float32"
}
NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
ADAMW_DEFAULTS: dict[str, Any] = {"betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False}


class MuonRec(torch.optim.Optimizer):
    """Muon + AdamW in one optimizer. Build it with :meth:`from_model` (named presets) or pass groups
    that each carry ``use_muon`` and ``lr`` (and optionally ``weight_decay`` and the family's options)."""

    def __init__(self, params: Iterable[dict[str, Any]], *, lr: float = 1e-3, weight_decay: float = 0.0,
                 distributed: bool = True) -> None:
        self.distributed = distributed  # split Newton-Schulz work across data-parallel ranks (see _orthogonalize)
        self.ns_matrices = 0  # matrices this rank orthogonalized under data parallelism (for tests and logs)
        groups = list(params)
        for group in groups:
            if "use_muon" not in group:
                raise ValueError("every MuonRec parameter group needs 'use_muon' (see MuonRec.from_model)")
            _fill_family_defaults(group)
            if group["use_muon"] and group["adjust_lr"] not in ("original", "match_rms_adamw"):
                raise ValueError(f"adjust_lr must be 'original' or 'match_rms_adamw', got {group['adjust_lr']!r}")
            if group["use_muon"] and group["ns_dtype"] not in ("auto", *NS_DTYPES):
                raise ValueError(f"ns_dtype must be 'auto', 'bfloat16' or 'float32', got {group['ns_dtype']!r}")
        super().__init__(groups, {"lr": lr, "weight_decay": weight_decay})
        for group in self.param_groups:
            for p in group["params"]:
                if group["use_muon"] and p.dim() < 2:
                    raise ValueError(f"Muon family parameters must have >= 2 dims, got shape {tuple(p.shape)}")

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Also what ``load_state_dict`` calls: groups saved before an option existed (e.g. ``ns_dtype``)
        get its default, so older checkpoints resume."""
        super().__setstate__(state)
        for group in self.param_groups:
            _fill_family_defaults(group)

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        preset: Preset = "muonrec",
        *,
        muon_lr: float = 0.02,
        adamw_lr: float = 1e-3,
        muon_weight_decay: float = 0.0,
        adamw_weight_decay: float = 0.0,
        match_adamw_rms: bool = False,
        overrides: dict[str, str] | None = None,
        **options: Any,
    ) -> MuonRec:
        """Group ``model``'s parameters by ``preset`` (see :mod:`.param_groups`) and build the optimizer.

        ``match_adamw_rms=True`` scales Muon updates to AdamW's RMS (``0.2 * sqrt(max(m, n))``) and, unless
        ``muon_lr`` is given explicitly, shares ``adamw_lr``. Extra ``options`` (e.g. ``betas``,
        ``momentum``) go to the family that has them.
        """
        muon_opts = {k: v for k, v in options.items() if k in MUON_DEFAULTS}
        adamw_opts = {k: v for k, v in options.items() if k in ADAMW_DEFAULTS}
        unknown = set(options) - set(muon_opts) - set(adamw_opts)
        if unknown:
            raise TypeError(f"unknown MuonRec options {sorted(unknown)}")
        if match_adamw_rms:
            muon_opts["adjust_lr"] = "match_rms_adamw"
        groups = build_param_groups(model, preset, overrides=overrides)
        out = []
        for group in groups:
            if group["use_muon"]:
                out.append({**group, "lr": muon_lr, "weight_decay": muon_weight_decay, **muon_opts})
            else:
                out.append({**group, "lr": adamw_lr, "weight_decay": adamw_weight_decay, **adamw_opts})
        return cls([g for g in out if g["params"]])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:
                    name = _name_of(group, p)
                    raise RuntimeError(
                        f"MuonRec: parameter {name} has a sparse gradient; MuonRec needs dense gradients "
                        "(use nn.Embedding(sparse=False), or torchrec's fused sparse optimizers for tables)"
                    )
            if not params:
                continue
            if group["use_muon"]:
                self._muon_step(group, params)
            else:
                self._adamw_step(group, params)
        return loss

    def _muon_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        mu = group["momentum"]
        updates: dict[tuple[int, int], list[tuple[Tensor, Tensor]]] = defaultdict(list)
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, dtype=torch.float32)
            buf = state["momentum_buffer"]
            grad = p.grad.float()
            buf.lerp_(grad, 1 - mu)
            update = grad.lerp(buf, mu) if group["nesterov"] else buf
            matrix = update.reshape(update.shape[0], -1)
            updates[tuple(matrix.shape)].append((p, matrix))
        start = 0  # matrices are dealt to ranks round-robin across the buckets (see _orthogonalize)
        for (rows, cols), items in updates.items():
            ortho = self._orthogonalize([m for _, m in items], group, start)
            start += len(items)
            if group["adjust_lr"] == "match_rms_adamw":
                scale = 0.2 * math.sqrt(max(rows, cols))
            else:
                scale = math.sqrt(max(1.0, rows / cols))
            lr, wd = group["lr"], group["weight_decay"]
            for (p, _), o in zip(items, ortho, strict=True):
                if wd:
                    p.mul_(1 - lr * wd)
                p.add_(o.view(p.shape).to(p.dtype), alpha=-lr * scale)

    def _orthogonalize(self, matrices: list[Tensor], group: dict[str, Any], start: int = 0) -> list[Tensor]:
        """NS5 of same-shape matrices in one batched iteration. Under data parallelism (an initialized
        process group of several ranks, ``distributed`` not turned off) the step's matrices are dealt to the
        ranks round-robin (matrix ``start + i`` of the step to rank ``(start + i) % W``), each rank
        orthogonalizes its own only, and the results are all-gathered: every rank ends with every update and
        none repeats another's Newton-Schulz work (the gradients, hence the momenta, are already equal on
        every rank after the all-reduce)."""
        device = matrices[0].device
        dtype = ns_dtype(device) if group["ns_dtype"] == "auto" else NS_DTYPES[group["ns_dtype"]]
        ns = (group["ns_steps"], group["ns_coefficients"], group["ns_eps"], dtype)
        world = dist.get_world_size() if self.distributed and dist.is_available() and dist.is_initialized() else 1
        if world == 1:
            return list(orthogonalize(torch.stack(matrices), *ns))
        rank, n = dist.get_rank(), len(matrices)
        owned = [[i for i in range(n) if (start + i) % world == r] for r in range(world)]
        slots = max(len(o) for o in owned)
        out = torch.zeros(slots, *matrices[0].shape, dtype=dtype, device=device)
        if owned[rank]:
            out[: len(owned[rank])] = orthogonalize(torch.stack([matrices[i] for i in owned[rank]]), *ns)
        self.ns_matrices += len(owned[rank])
        gathered = [torch.empty_like(out) for _ in range(world)]
        dist.all_gather(gathered, out)
        result: list[Tensor] = [out[0]] * n
        for r, indices in enumerate(owned):
            for k, i in enumerate(indices):
                result[i] = gathered[r][k]
        return result

    def _adamw_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        exp_avgs, exp_avg_sqs, max_sqs, steps = [], [], [], []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            if group["amsgrad"]:
                max_sqs.append(state["max_exp_avg_sq"])
            steps.append(state["step"])
        beta1, beta2 = group["betas"]
        adam(
            params, [p.grad for p in params], exp_avgs, exp_avg_sqs, max_sqs, steps,
            amsgrad=group["amsgrad"], beta1=beta1, beta2=beta2, lr=group["lr"],
            weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
            decoupled_weight_decay=True,
        )


def _fill_family_defaults(group: dict[str, Any]) -> None:
    """The options a group's family (Muon or AdamW) has and the group does not set: their defaults."""
    for key, value in (MUON_DEFAULTS if group["use_muon"] else ADAMW_DEFAULTS).items():
        group.setdefault(key, value)


def _name_of(group: dict[str, Any], p: Tensor) -> str:
    names = group.get("param_names")
    if names:
        for name, q in zip(names, group["params"], strict=False):
            if q is p:
                return f"'{name}'"
    return f"of shape {tuple(p.shape)}"
