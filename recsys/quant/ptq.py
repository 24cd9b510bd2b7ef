"""Post-training FP8 quantization of a trained model: which linears, and a report of what was done.

OneRec-V2 FP8 PTQ (arXiv 2603.11486; ``../shared/PAPERS.md`` §6.2) quantizes the attention q/k/v/o
linears, the dense FFN linears and the MoE expert GEMMs, and keeps numerically sensitive or low-FLOP
modules in 16 bits (the exact list is not public; ours is below). Every ``nn.Linear`` of the model gets a
**role** from its qualified name:

* ``attention``: q/k/v/o projections (``self_attn.q``, ``cross.mid.kv``, ``act_cam.out`` ...);
* ``ffn``: feed-forward linears (``ffn.recent.0``, ``mlp.1``, A2Gen's ``z.1`` ...);
* ``experts``: mixture-of-experts towers (PLE/MMoE ``specific.3.0``, ``shared.0.2``, ``experts.1.0``);
* ``head``: output heads (``action_head``, ``time_head``), ``indexer``: GEMs' lightning indexer,
  ``other``: everything else (input projections, gates, the lifecycle summarizer).

Only the roles in :attr:`Fp8Config.roles` are quantized (default attention, ffn, experts); heads and the
indexer (its top-K choice is discrete: a small score error flips which keys are read), embeddings and
norms (not linears) stay in their original precision. Linears smaller than ``min_features`` on either side
stay too (no GEMM worth quantizing). :class:`QuantReport` lists every linear with its decision.

>>> model = nn.ModuleDict({"attn": nn.ModuleDict({"q": nn.Linear(32, 32)}), "action_head": nn.Linear(32, 4)})
>>> report = quantize_fp8(model)
>>> [(r.name, r.role, r.quantized) for r in report.rows]
[('attn.q', 'attention', True), ('action_head', 'head', False)]
>>> type(model["attn"]["q"]).__name__
'Fp8Linear'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from recsys.quant.fp8 import Backend, Fp8Linear

ROLE_PATTERNS: dict[str, str] = {
    "head": r"(^|\.)\w*head$",
    "indexer": r"(^|\.)indexer\.",
    "attention": r"(^|\.)(self_attn|attn|cross\.\w+|\w*cam)\.(q|k|v|kv|qkv|out)$",
    "ffn": r"(^|\.)(ffn(\.\w+)?|mlp|z)\.\d+$",
    "experts": r"(^|\.)(experts|specific|shared)\.\d+\.\d+$",
}


def role_of(name: str) -> str:
    """The role of the linear called ``name`` (first matching pattern of :data:`ROLE_PATTERNS`, else other)."""
    for role, pattern in ROLE_PATTERNS.items():
        if re.search(pattern, name):
            return role
    return "other"


@dataclass
class Fp8Config:
    """What to quantize and how.

    Args:
        roles: roles of linears to quantize (see the module docstring).
        include: regexes of linear names to quantize whatever their role.
        exclude: regexes of linear names to keep whatever their role (wins over ``include``).
        activation: ``dynamic`` per-token scales at run time (the paper), or ``static`` per-tensor scales
            from calibration (needs ``activation_absmax``).
        backend: see :class:`Fp8Linear`.
        min_features: linears with fewer input or output features are kept.
    """

    roles: tuple[str, ...] = ("attention", "ffn", "experts")
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    activation: Literal["dynamic", "static"] = "dynamic"
    backend: Backend = "auto"
    min_features: int = 16


@dataclass
class QuantRow:
    name: str
    role: str
    in_features: int
    out_features: int
    quantized: bool
    reason: str
    bytes_before: int  # weight + bias
    bytes_after: int  # FP8 weight + fp32 scales + bias (+ static input scale)


@dataclass
class QuantReport:
    rows: list[QuantRow] = field(default_factory=list)
    config: Fp8Config = field(default_factory=Fp8Config)

    @property
    def quantized(self) -> list[str]:
        return [r.name for r in self.rows if r.quantized]

    def size_ratio(self) -> float:
        """Bytes of the quantized linears after / before (their weights, scales and biases)."""
        q = [r for r in self.rows if r.quantized]
        return sum(r.bytes_after for r in q) / max(sum(r.bytes_before for r in q), 1)

    def to_markdown(self) -> str:
        lines = ["| linear | role | in x out | FP8 | why | bytes before | bytes after |",
                 "| :-- | :-- | --: | :-: | :-- | --: | --: |"]
        for r in self.rows:
            lines.append(f"| {r.name} | {r.role} | {r.in_features} x {r.out_features} | {'yes' if r.quantized else 'no'} "
                         f"| {r.reason} | {r.bytes_before:,} | {r.bytes_after:,} |")
        q = [r for r in self.rows if r.quantized]
        lines.append(f"\n{len(q)} of {len(self.rows)} linears quantized ({self.config.activation} activation scales); "
                     f"their bytes: {sum(r.bytes_before for r in q):,} -> {sum(r.bytes_after for r in q):,} "
                     f"({self.size_ratio():.3f}x).")
        return "\n".join(lines)


def _decide(name: str, linear: nn.Linear, config: Fp8Config) -> tuple[bool, str]:
    if any(re.search(p, name) for p in config.exclude):
        return False, "excluded by config"
    if min(linear.in_features, linear.out_features) < config.min_features:
        return False, f"smaller than {config.min_features} features"
    if any(re.search(p, name) for p in config.include):
        return True, "included by config"
    role = role_of(name)
    if role in config.roles:
        return True, f"role {role}"
    return False, {"head": "output head: kept in high precision", "indexer": "indexer: top-K choice is discrete",
                   }.get(role, f"role {role} not selected")


@torch.no_grad()
def quantize_fp8(model: nn.Module, config: Fp8Config | None = None,
                 activation_absmax: dict[str, float] | None = None) -> QuantReport:
    """Replace the selected ``nn.Linear`` modules of ``model`` by :class:`Fp8Linear` in place.

    ``activation_absmax``: per linear name, the largest ``|input|`` seen in calibration
    (:func:`recsys.quant.stats.collect_statistics` gives it); required for ``activation="static"``."""
    config = config or Fp8Config()
    report = QuantReport(config=config)
    linears = [(n, m) for n, m in model.named_modules() if type(m) is nn.Linear]
    for name, linear in linears:
        quantize, reason = _decide(name, linear, config)
        before = linear.weight.numel() * linear.weight.element_size()
        if linear.bias is not None:
            before += linear.bias.numel() * linear.bias.element_size()
        after = before
        if quantize:
            absmax = None
            if config.activation == "static":
                if activation_absmax is None or name not in activation_absmax:
                    raise ValueError(f"static activation scales need calibration: no input absmax for {name!r}")
                absmax = activation_absmax[name]
            fp8 = Fp8Linear.from_linear(linear, activation=config.activation, input_absmax=absmax,
                                        backend=config.backend)
            after = sum(b.numel() * b.element_size() for b in fp8.buffers())
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, fp8)
        report.rows.append(QuantRow(name, role_of(name), linear.in_features, linear.out_features, quantize, reason,
                                    before, after))
    return report
