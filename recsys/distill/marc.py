"""MARC: Modular Representation Compression (arXiv 2604.18146, SIGIR 2026; ``../shared/PAPERS.md`` §5).

A text encoder's representation ``h`` of every item and user (cached per layer by
:mod:`recsys.distill.encoder`) is compressed to a small code ``z`` that a CTR model reads as a feature
(:mod:`recsys.models.pretrained`). The paper's finding (MRA): a middle layer compresses better than the final
one, because the final layers specialise to the encoder's own pre-training task. MARC makes the final layer
win by splitting the work into modules (§5.1-5.2):

* **Modular adjustment**: the encoder only represents (frozen here); a **compression network** ``C`` maps
  ``h`` to ``z`` (an MLP, one per entity type: item texts and user texts differ; ``user_side="id"``, the
  default, gives users learned id embeddings instead: user texts built from side features alone, such as
  MovieLens demographics, say little about taste, and the proxy task would then have nothing to learn from); a **matching network**
  ``M`` of a *different structure* (a deeper MLP, or a DCN-v2 cross network) carries the proxy task, so the
  task-specific adaptation happens in ``M``, not in ``z``.
* **Modular task decoupling** with HSIC constraints (:mod:`recsys.distill.hsic`, normalized, RBF kernels,
  median bandwidth): *maximize* ``nHSIC(h, z)`` (the code keeps the representation's information) and
  *minimize* ``nHSIC(z, sg(m))`` between the code and ``M``'s last hidden layer (the code does not become the
  task head's features)::

      loss = proxy(M(z_u, z_i), y) - keep * (nHSIC(h_i, z_i) + nHSIC(h_u, z_u)) / 2 + decouple * nHSIC([z_u, z_i], sg(m))

  ``sg`` is stop-gradient (our choice): the constraint moves the codes, not the matcher. Since ``m`` is a
  function of ``z``, a matcher free to lower ``nHSIC(z, m)`` reaches 0 by making ``m`` constant, every
  ReLU of its last layer off, and a dead ReLU layer never recovers: the proxy then stays at the base rate's
  loss and the codes are trained by the keep term alone. Before this choice that happened in 2 of 3 seeds on
  synthetic MovieLens (2,000 items) and in every seed on KuaiRand-format data with 30,000 users.
  ``matcher_active`` in the history (the share of the last hidden layer's units active on some pair of the
  batch) shows whether the task head is alive.

* **Proxy task**: ``bce`` on the training split's (user, item, liked) pairs, or ``contrastive``: in-batch
  softmax of ``M``'s scores over the liked pairs (each user against the batch's items).

The paper's text is not public: module sizes, the loss weights, the proxy heads and the cross network are
our reconstruction from its summary (PAPERS.md §5.2-5.3). The encoder is frozen by default (its layers are
cached once); ``train_marc(item_encoder=...)`` fine-tunes its last ``k`` layers on the item texts
(:mod:`recsys.distill.finetune`). ``mrl_dims`` turns the same networks into the Matryoshka (MRL)
baseline: no HSIC, the proxy loss summed over nested prefixes of ``z``.

Shapes, with ``H = 384`` (MiniLM), ``d = 32``, a batch of ``B = 256`` pairs (users as text)::

    h_u [256, 384] -> standardize -> C_user (384 -> 256 -> 32, GELU) -> z_u [256, 32]
    h_i [256, 384] -> standardize -> C_item                          -> z_i [256, 32]
    M([z_u, z_i, z_u * z_i] [256, 96]) -> 128 -> 128 -> m [256, 64] -> logit [256]
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from recsys.distill.hsic import normalized_hsic

log = logging.getLogger(__name__)


@dataclass
class MARCConfig:
    """Sizes, loss weights and training of MARC (see the module docstring)."""

    dim: int = 32
    compressor_hidden: int = 256
    matcher: Literal["mlp", "cross"] = "mlp"
    matcher_hidden: tuple[int, ...] = (128, 128, 64)
    proxy: Literal["bce", "contrastive"] = "bce"
    keep: float = 0.5  # weight of -nHSIC(h, z)
    decouple: float = 0.5  # weight of nHSIC(z, m)
    hsic_batch: int = 256  # HSIC on the first rows of each batch: O(n^2)
    mrl_dims: tuple[int, ...] = ()  # Matryoshka baseline: nested prefixes of z, no HSIC
    user_side: Literal["id", "text"] = "id"  # users as learned id embeddings, or compressed user texts
    epochs: int = 5
    batch_size: int = 256
    lr: float = 5e-3
    weight_decay: float = 1e-4
    temperature: float = 0.1  # contrastive proxy
    finetune_lr: float = 2e-5  # the encoder's trainable layers (train_marc's item_encoder)
    seed: int = 0


class Compressor(nn.Module):
    """``h [.., H] -> z [.., d]``: per-column standardization with the table's statistics (a language
    model's hidden states have a few dimensions orders of magnitude larger than the rest: unscaled, they
    would dominate both the MLP and the RBF kernels of the HSIC terms), then an MLP with one hidden GELU
    layer."""

    def __init__(self, table: torch.Tensor, hidden: int, dim: int) -> None:
        super().__init__()
        rows = table[1:].float()
        self.register_buffer("mean", rows.mean(0))
        self.register_buffer("std", rows.std(0).clamp(min=1e-6))
        self.net = nn.Sequential(nn.Linear(table.shape[1], hidden), nn.GELU(), nn.Linear(hidden, dim))

    def standardize(self, h: torch.Tensor) -> torch.Tensor:
        return (h - self.mean) / self.std

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardize(h))


class CrossLayer(nn.Module):
    """DCN-v2 cross layer (Wang et al., WWW 2021, Eq. 1): ``x_{l+1} = x_0 * (W x_l + b) + x_l``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


class Matcher(nn.Module):
    """User-item matching network over ``[z_u, z_i, z_u * z_i]``: a deeper MLP (``mlp``) or 3 cross layers
    followed by that MLP (``cross``). Returns ``(logit [B], m [B, last hidden])``."""

    def __init__(self, dim: int, hidden: tuple[int, ...], kind: str) -> None:
        super().__init__()
        width = 3 * dim
        self.cross = nn.ModuleList(CrossLayer(width) for _ in range(3)) if kind == "cross" else nn.ModuleList()
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(width, 1)

    def forward(self, zu: torch.Tensor, zi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = torch.cat([zu, zi, zu * zi], dim=-1)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        m = self.mlp(x)
        return self.out(m).squeeze(-1), m


class MARC(nn.Module):
    """Compressors for items and users plus the matching network (see the module docstring)."""

    def __init__(self, item_h: torch.Tensor, user_h: torch.Tensor, config: MARCConfig) -> None:
        super().__init__()
        self.config = config
        self.item = Compressor(item_h, config.compressor_hidden, config.dim)
        if config.user_side == "text":
            self.user = Compressor(user_h, config.compressor_hidden, config.dim)
        else:
            self.user_ids = nn.Embedding(user_h.shape[0], config.dim)
            nn.init.normal_(self.user_ids.weight, std=0.1)
        self.matchers = nn.ModuleDict({str(d): Matcher(d, config.matcher_hidden, config.matcher)
                                       for d in (config.mrl_dims or (config.dim,))})

    def user_codes(self, users: torch.Tensor, hu: torch.Tensor) -> torch.Tensor:
        return self.user(hu) if self.config.user_side == "text" else self.user_ids(users)

    def loss(self, users: torch.Tensor, hu: torch.Tensor, hi: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """``users [B]`` indices with their text representations ``hu [B, H']``, items' ``hi [B, H]``, labels ``y``."""
        cfg = self.config
        zu, zi = self.user_codes(users, hu), self.item(hi)
        total = zu.new_zeros(())
        parts: dict[str, float] = {}
        m = pair = zu.new_zeros(0, 1)
        for name, matcher in self.matchers.items():
            d = int(name)
            u, i = zu[:, :d], zi[:, :d]
            if cfg.proxy == "bce":
                logit, m = matcher(u, i)
                proxy = F.binary_cross_entropy_with_logits(logit, y)
                pair = torch.cat([u, i], -1)
            else:  # in-batch softmax over the liked pairs: user b against every item of the batch
                pos = y > 0.5
                u, i = u[pos], i[pos]
                n = u.shape[0]
                if n < 2:
                    continue
                logits, hidden = matcher(u[:, None].expand(n, n, d), i[None].expand(n, n, d))
                proxy = F.cross_entropy(logits / cfg.temperature, torch.arange(n, device=u.device))
                m, pair = hidden.diagonal(dim1=0, dim2=1).T, torch.cat([u, i], -1)  # the liked pairs' own
            total = total + proxy
            parts[f"proxy@{d}"] = float(proxy.detach())
        if not cfg.mrl_dims:
            n = min(cfg.hsic_batch, hu.shape[0])
            keep = normalized_hsic(self.item.standardize(hi[:n]), zi[:n])
            if cfg.user_side == "text":
                keep = (keep + normalized_hsic(self.user.standardize(hu[:n]), zu[:n])) / 2
            total = total - cfg.keep * keep
            parts["hsic_keep"] = float(keep.detach())
            if m.shape[0] >= 2:  # m and pair are aligned (bce: the batch's pairs; contrastive: its liked ones)
                # sg(m): the constraint moves the codes, never the matcher (else: a dead matcher; module docstring)
                decouple = normalized_hsic(pair[:n], m[:n].detach())
                total = total + cfg.decouple * decouple
                parts["hsic_decouple"] = float(decouple.detach())
        if m.shape[0] >= 1:
            parts["matcher_active"] = float((m.detach() > 0).any(0).float().mean())
        return total, parts

    @torch.no_grad()
    def codes(self, item_h: torch.Tensor, user_h: torch.Tensor, chunk: int = 8192) -> dict[str, torch.Tensor]:
        """What CTR models read: ``{"item": [num_items, d]}``, plus ``"user": [num_users, d]`` when users are
        texts (row 0, padding, is zero). Users' id embeddings are not exported: fitted to the training
        pairs' labels, as features they would hand those labels to a CTR model trained on the same pairs
        (measured on synthetic MovieLens: AUC 0.648 with them vs 0.708 without any text feature)."""
        d = self.config.dim
        item = torch.cat([self.item(item_h[s:s + chunk].float()) for s in range(0, item_h.shape[0], chunk)])
        out = {"item": item[:, :d].contiguous()}
        if self.config.user_side == "text":
            users = torch.arange(user_h.shape[0])
            user = torch.cat([self.user_codes(users[s:s + chunk], user_h[s:s + chunk].float())
                              for s in range(0, user_h.shape[0], chunk)])
            out["user"] = user[:, :d].contiguous()
        for z in out.values():
            z[0] = 0
        return out


def train_marc(item_h: torch.Tensor, user_h: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
               config: MARCConfig, item_encoder: nn.Module | None = None,
               valid: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
               ) -> tuple[MARC, list[dict[str, float]]]:
    """Train MARC on ``pairs = (users [P], items [P], labels [P])`` (training split only) with frozen
    representations ``item_h [num_items, H]``, ``user_h [num_users, H']``; returns the model and per-epoch
    mean losses. ``item_encoder`` (a :class:`~recsys.distill.finetune.TrainableEncoder` over the item texts)
    computes the items' representations in every step instead, its trainable layers updated with
    ``finetune_lr``; ``item_h`` then only gives the standardization statistics (the encoder's final layer
    before fine-tuning).

    ``valid``: held-out pairs (the validation split's): after every epoch their proxy loss is measured
    (``valid_proxy`` in the history) and the model of the best epoch is returned, with the fine-tuned
    encoder's layers of that epoch (early stopping: the codes are fitted to the training pairs' labels, which
    the CTR model then trains on again, so an overfitted compressor hands it those labels' noise)."""
    torch.manual_seed(config.seed)
    model = MARC(item_h, user_h, config)
    groups = [{"params": list(model.parameters())}]
    if item_encoder is not None:
        groups.append({"params": [p for p in item_encoder.parameters() if p.requires_grad], "lr": config.finetune_lr})
        item_encoder.train()
    opt = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    users, items, labels = pairs
    g = torch.Generator().manual_seed(config.seed)
    history = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    for epoch in range(config.epochs):
        order = torch.randperm(users.shape[0], generator=g)
        sums: dict[str, float] = {}
        steps = 0
        started = time.perf_counter()
        for s in range(0, order.shape[0], config.batch_size):
            idx = order[s:s + config.batch_size]
            if idx.shape[0] < 2:
                continue
            if item_encoder is None:
                hi = item_h[items[idx]].float()
            else:  # each distinct item of the batch through the encoder once
                distinct, inverse = items[idx].unique(return_inverse=True)
                hi = item_encoder(distinct)[inverse].to(item_h.device)  # the encoder may sit on a GPU
            loss, parts = model.loss(users[idx], user_h[users[idx]].float(), hi, labels[idx].float())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"MARC loss is {float(loss)} at epoch {epoch}, step {steps}: {parts}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v
        means = {k: v / max(steps, 1) for k, v in sums.items()}
        if valid is not None:
            means["valid_proxy"] = (validation_proxy(model, item_h, user_h, valid, config) if item_encoder is None
                                    else _encoded_validation_proxy(model, item_encoder, user_h, valid, config))
            if best is None or means["valid_proxy"] < best[0]:
                best = (means["valid_proxy"], epoch, _trained_state(model, item_encoder))
        history.append(means)
        log.info("MARC epoch %d: %s (%.1f s)", epoch, {k: round(v, 4) for k, v in means.items()},
                 time.perf_counter() - started)
    if best is not None:
        model.load_state_dict(best[2]["marc"])
        if item_encoder is not None:
            item_encoder.load_state_dict(best[2]["encoder"], strict=False)
        history[best[1]]["best"] = 1.0
    return model.eval(), history


def _trained_state(model: MARC, item_encoder: nn.Module | None) -> dict[str, dict[str, torch.Tensor]]:
    """A copy of what training changes: MARC's state and the encoder's trainable parameters (not its frozen
    layers, which can be gigabytes)."""
    state = {"marc": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    if item_encoder is not None:
        state["encoder"] = {k: p.detach().clone() for k, p in item_encoder.named_parameters() if p.requires_grad}
    return state


def _encoded_validation_proxy(model: MARC, item_encoder: nn.Module, user_h: torch.Tensor,
                              pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], config: MARCConfig) -> float:
    """:func:`validation_proxy` with the items' representations from the fine-tuned encoder (its
    ``encode``): each distinct validation item encoded once, in eval mode."""
    users, items, labels = pairs
    distinct, inverse = items.unique(return_inverse=True)
    h = item_encoder.encode(distinct).float().to(user_h.device)
    return validation_proxy(model, h, user_h, (users, inverse, labels), config)


@torch.no_grad()
def validation_proxy(model: MARC, item_h: torch.Tensor, user_h: torch.Tensor,
                     pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], config: MARCConfig) -> float:
    """Mean proxy loss (the widest code's) of ``pairs``, in batches of the training batch size, eval mode."""
    was_training = model.training
    model.eval()
    users, items, labels = pairs
    key = f"proxy@{config.dim}"
    total, count = 0.0, 0
    for s in range(0, users.shape[0], config.batch_size):
        u, i, y = users[s:s + config.batch_size], items[s:s + config.batch_size], labels[s:s + config.batch_size]
        if u.shape[0] < 2:
            continue
        _, parts = model.loss(u, user_h[u].float(), item_h[i].float(), y.float())
        if key in parts:
            total, count = total + parts[key] * u.shape[0], count + u.shape[0]
    model.train(was_training)
    return total / max(count, 1)


def save_codes(codes: dict[str, torch.Tensor], path: Path, meta: dict) -> None:
    """Write codes as safetensors (what :mod:`recsys.models.pretrained` reads) plus ``<path>.json`` with
    ``meta``; both atomically (temp file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.float().contiguous() for k, v in codes.items()}, str(tmp), metadata={"meta": json.dumps(meta)})
    tmp.replace(path)
    side = path.with_suffix(".json")
    tmp_side = side.with_name(f".{side.name}.tmp")
    tmp_side.write_text(json.dumps(meta, indent=2, default=str))
    tmp_side.replace(side)

