"""Losses that mean the same thing on 1 process and on W data-parallel processes.

DDP averages the ranks' gradients, so a loss that is a mean over *this rank's* tokens weighs a token by
``1 / (W n_r)``: the single-process weight ``1 / N`` only when every rank holds ``n_r = N / W`` tokens. With
jagged sequences the ranks' token counts differ, so :func:`global_mean` divides the rank's loss *sum* by the
global count (all-reduced, not differentiated) and multiplies by ``W``: after DDP's average, every token of
the global batch weighs ``1 / N``, exactly as on one process.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def global_mean(total: torch.Tensor, count: torch.Tensor | int) -> torch.Tensor:
    """``total`` (a sum over this rank's ``count`` items) as its share of the mean over all ranks' items."""
    count = torch.as_tensor(count, dtype=torch.float64, device=total.device).detach()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return total / count.clamp(min=1e-12).to(total.dtype)
    world = dist.get_world_size()
    count = count.clone()
    dist.all_reduce(count)  # every rank must get here, also with nothing to count (then total is 0)
    return total * (world / count.clamp(min=1e-12)).to(total.dtype)


def weighted_global_mean(per_sample: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The (weighted) mean of ``[B]`` per-sample losses over the global batch (see :func:`global_mean`)."""
    if weights is None:
        return global_mean(per_sample.sum(), per_sample.shape[0])
    return global_mean((per_sample * weights).sum(), weights.sum())


def finish_process_group() -> None:
    """At the end of a distributed job: a barrier, then destroy the default process group (if any).

    A process that exits with its gloo group alive can abort (SIGABRT, "terminate called without an active
    exception") when a peer is still tearing down its side; the barrier makes every rank leave together.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def end_spawned_worker() -> None:
    """End a ``torch.multiprocessing.spawn`` worker that finished its work: a barrier with the other ranks,
    then exit at once with status 0, without running the gloo group's C++ destructors (on 2 CPU processes they
    sometimes abort a rank with SIGABRT, "terminate called without an active exception", when its peer is
    tearing down at the same time). Call it last, on the success path only: an exception still propagates."""
    import os
    import sys

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
