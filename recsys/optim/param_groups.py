"""Which parameters get Muon and which AdamW: named presets plus name-pattern overrides.

Presets (MuonRec's code, arXiv 2603.00416, ``experiments/traditional/*_muon.py`` and ``sft_muon.py``;
Keller Jordan's Muon recipe):

``muonrec``  the paper's recipe for sequential recommenders: embedding tables and parameters with <= 1
             dimension on AdamW, **every other matrix on Muon, including the item-scoring head**.
``keller``   embedding tables, output heads and <= 1-D parameters on AdamW; hidden matrices on Muon.
``llm``      token embeddings, the LM head and norms on AdamW; 2-D projection matrices (names with
             ``proj``) on Muon; any other matrix on AdamW (MiniOneRec's grouping in MuonRec's code).

Embedding tables are found by module type (``nn.Embedding``, ``nn.EmbeddingBag`` and torchrec's
embedding collections, sharded or not), not by name; a weight tied to a table (e.g. SASRec's output
layer) is the table. Output heads are matched by name (:data:`HEAD_PATTERN`). ``overrides`` maps regular
expressions over parameter names to ``"muon"`` or ``"adamw"``; the first match wins over the preset.

>>> m = torch.nn.ModuleDict({"emb": torch.nn.Embedding(5, 4), "proj": torch.nn.Linear(4, 4),
...                          "head": torch.nn.Linear(4, 5)})
>>> [(g["use_muon"], g["param_names"]) for g in build_param_groups(m, "keller")]
[(True, ['proj.weight']), (False, ['emb.weight', 'proj.bias', 'head.weight', 'head.bias'])]
>>> [(g["use_muon"], g["param_names"]) for g in build_param_groups(m, "muonrec")][0]
(True, ['proj.weight', 'head.weight'])
"""

from __future__ import annotations

import re
from typing import Any, Literal

import torch
from torch import nn

Preset = Literal["muonrec", "keller", "llm"]
#: Parameter names treated as output heads by the ``keller`` and ``llm`` presets.
HEAD_PATTERN = re.compile(r"(^|\.)(lm_head|head|heads|classifier|output_layer|score|scorer)(\.|$)")
_NORM_PATTERN = re.compile(r"norm", re.IGNORECASE)
_EMBED_NAME = re.compile(r"embed", re.IGNORECASE)


def embedding_parameters(model: nn.Module) -> set[int]:
    """Ids of the parameters that are embedding tables (by module type, torchrec's included)."""
    kinds: tuple[type, ...] = (nn.Embedding, nn.EmbeddingBag)
    try:
        from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

        kinds += (EmbeddingCollection, EmbeddingBagCollection)
    except ImportError:  # torchrec is a dependency, but the grouping does not need it
        pass
    found: set[int] = set()
    for module in model.modules():
        if isinstance(module, kinds) or "Embedding" in type(module).__name__:
            found.update(id(p) for p in module.parameters())
    return found


def updated_in_backward(p: torch.Tensor) -> bool:
    """Whether a fused optimizer updates ``p`` inside the backward pass (torchrec's sharded tables mark
    such parameters with ``_in_backward_optimizers``): a module's own optimizer must leave it out."""
    return hasattr(p, "_in_backward_optimizers")


def dense_parameters(model: nn.Module) -> list[torch.Tensor]:
    """The parameters a module's own optimizer steps: those requiring gradients and not updated by a
    fused optimizer in the backward pass. The same list on every rank and at every world size."""
    return [p for p in model.parameters() if p.requires_grad and not updated_in_backward(p)]


def _preset_says_muon(preset: Preset, name: str, p: torch.Tensor, is_table: bool) -> bool:
    if p.dim() < 2 or is_table:
        return False
    if preset == "muonrec":
        return True
    if preset == "keller":
        return not HEAD_PATTERN.search(name)
    if preset == "llm":
        if _EMBED_NAME.search(name) or HEAD_PATTERN.search(name) or _NORM_PATTERN.search(name):
            return False
        return "proj" in name
    raise ValueError(f"unknown preset {preset!r}: expected 'muonrec', 'keller' or 'llm'")


def build_param_groups(
    model: nn.Module, preset: Preset = "muonrec", *, overrides: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Two groups, ``use_muon=True`` then ``False``, each with ``params`` and ``param_names``.

    Parameters that do not require gradients are left out, and so are those a fused optimizer updates in
    the backward pass (torchrec's sharded tables). A parameter shared by several modules appears once
    (under its first name).
    """
    tables = embedding_parameters(model)
    rules = [(re.compile(pattern), family) for pattern, family in (overrides or {}).items()]
    for _, family in rules:
        if family not in ("muon", "adamw"):
            raise ValueError(f"override family must be 'muon' or 'adamw', got {family!r}")
    groups = {True: {"use_muon": True, "params": [], "param_names": []},
              False: {"use_muon": False, "params": [], "param_names": []}}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen or updated_in_backward(p):
            continue
        seen.add(id(p))
        use_muon = _preset_says_muon(preset, name, p, id(p) in tables)
        for pattern, family in rules:
            if pattern.search(name):
                use_muon = family == "muon"
                break
        if use_muon and p.dim() < 2:
            raise ValueError(f"override puts '{name}' (shape {tuple(p.shape)}) on Muon, which needs >= 2 dims")
        groups[use_muon]["params"].append(p)
        groups[use_muon]["param_names"].append(name)
    return [groups[True], groups[False]]
