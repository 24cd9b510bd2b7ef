"""Backward passes that gather rows by repeated ids give the same gradients every time.

Advanced indexing (``table[ids]``) accumulates its gradient with ``index_put_``, whose multi-threaded CPU
kernel adds repeated rows in a varying order: gradients then differ in the last bits from run to run, and
training runs of one seed drift apart (measured: GEMs recall@10 0.239-0.247 for one seed and command).
The models gather with ``F.embedding`` / ``index_select`` instead. Each case gathers enough rows for the
kernel to split the work over threads (the old code failed both tests on 2 threads, every time in 3 tries).
GEMs (its recent-stream positions and lifecycle reconstruction) was checked end to end instead: 150
training steps twice from one seed gave identical parameters after the change and different ones before.
"""

from __future__ import annotations

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.distill.proxy import hidden, init_params
from recsys.distill.stream import ProxyInputs
from recsys.models.sasrec import SASRec, SASRecConfig


def _same_grads(loss_fn, params: list[torch.Tensor], repeats: int = 4) -> None:
    grads = []
    for _ in range(repeats):
        for p in params:
            p.grad = None
        loss_fn().backward()
        grads.append([p.grad.clone() for p in params])
    for other in grads[1:]:
        for a, b in zip(grads[0], other, strict=True):
            assert torch.equal(a, b), float((a - b).abs().max())


def test_sasrec_sampled_output_rows():
    torch.manual_seed(0)
    for output in ("tied", "linear"):
        model = SASRec(SASRecConfig(num_items=3000, dim=64, max_len=4, dropout=0.0, output=output))
        hist = KeyedJaggedTensor.from_lengths_sync(keys=["item"], values=torch.randint(1, 3000, (8,)),
                                                   lengths=torch.full((4,), 2))
        ids = torch.randint(1, 3000, (512, 101))  # a batch of positives + sampled negatives: many repeats
        weight = torch.randn(512, 101, 64)
        table = model.head.weight if model.head is not None else model.item_table
        _same_grads(lambda m=model: (m.lookup(hist, ids)[1] * weight).sum(), [table])


def test_diet_proxy_embeddings():
    torch.manual_seed(0)
    params = init_params(3000, 4, 8, 2, dim=64)
    params["emb"].requires_grad_(True)
    x = ProxyInputs(ids=torch.randint(1, 3000, (4096, 4)), history=torch.randint(0, 3000, (4096, 20)),
                    slots=torch.randn(4096, 8), labels=torch.zeros(4096, 2))
    _same_grads(lambda: hidden(params, x).sum(), [params["emb"]])
