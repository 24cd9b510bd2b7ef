"""A text encoder whose last ``k`` transformer layers train with MARC (issue option "fine-tune its last k
layers"; MARC itself, arXiv 2604.18146, fine-tunes its LLM with the proxy task, ``../shared/PAPERS.md`` §5.2).

Every parameter is frozen except those of the last ``k`` blocks, found by the layer index in their names
(``encoder.layer.5.``, ``layers.31.``, ``h.11.``: the largest index is the last block), and the final norm
that follows them, if any. ``forward(rows)`` tokenizes those rows' texts, runs the model, and pools the
final hidden state the way :mod:`recsys.distill.encoder` does; autograd records only the trainable blocks
(the frozen ones run without a graph, since nothing before them needs gradients).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from recsys.distill.encoder import inspect_encoder, load_encoder, model_inputs, pool

_BLOCK = re.compile(r"\.(\d+)\.")
_FINAL_NORM = re.compile(r"(^|\.)(norm|ln_f|final_layer_norm|final_layernorm)\.")


def last_blocks(model: nn.Module, k: int) -> list[str]:
    """Names of the parameters in the model's last ``k`` numbered blocks and of its final norm, if any
    (``norm`` in Llama/Qwen, ``ln_f`` in GPT-2; BERT-style encoders have none)."""
    names = [name for name, _ in model.named_parameters()]
    indexed = [(name, int(m.group(1))) for name in names if (m := _BLOCK.search(name))]
    if not indexed:
        raise ValueError("no numbered transformer blocks in the model's parameter names")
    top = max(i for _, i in indexed)
    if not 1 <= k <= top + 1:
        raise ValueError(f"cannot fine-tune {k} layers: the model has {top + 1}")
    final_norm = [name for name in names if not _BLOCK.search(name) and _FINAL_NORM.search(name)]
    return [name for name, i in indexed if i > top - k] + final_norm


class TrainableEncoder(nn.Module):
    """``rows [B]`` (indices into ``texts``) -> pooled final hidden state ``[B, H]`` fp32, the last ``k``
    blocks trainable."""

    def __init__(self, folder: str | Path, texts: list[str], k: int, *, pooling: str = "mean",
                 max_length: int = 128, device: str | None = None) -> None:
        super().__init__()
        info = inspect_encoder(folder)
        self.tokenizer, self.model, self.device = load_encoder(folder, device, compute=torch.float32)
        self.model_type, self.texts, self.pooling, self.max_length = info.model_type, texts, pooling, max_length
        trainable = set(last_blocks(self.model, k))
        for name, p in self.model.named_parameters():
            p.requires_grad_(name in trainable)
        self.trainable = sorted(trainable)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        rows = rows.tolist()
        texts = [self.texts[i] for i in rows]
        nonempty = [j for j, t in enumerate(texts) if t]
        out = torch.zeros(len(rows), self.model.config.hidden_size, device=self.device)
        if nonempty:
            kwargs = model_inputs(self.tokenizer, self.model, self.model_type, [texts[j] for j in nonempty],
                                  self.max_length, self.device)
            last = self.model(**kwargs, return_dict=True).last_hidden_state
            out = out.index_put((torch.tensor(nonempty, device=self.device),),
                                pool([last], kwargs["attention_mask"], self.pooling)[0])
        return out

    @torch.no_grad()
    def encode(self, rows: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """``[len(rows), H]`` on the CPU with the current weights, in eval mode, in batches."""
        was = self.training
        self.eval()
        out = torch.cat([self(rows[s:s + batch_size]).cpu() for s in range(0, rows.shape[0], batch_size)])
        self.train(was)
        return out

    def encode_all(self, batch_size: int = 256) -> torch.Tensor:
        """``[len(texts), H]`` with the current weights (row 0, padding, stays zero)."""
        return self.encode(torch.arange(len(self.texts)), batch_size)
