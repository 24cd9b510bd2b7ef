"""Optimizers: MuonRec (Muon for weight matrices, AdamW for the rest, in one optimizer)."""

from recsys.optim.muonrec import MuonRec
from recsys.optim.newton_schulz import orthogonalize
from recsys.optim.param_groups import build_param_groups

__all__ = ["MuonRec", "build_param_groups", "orthogonalize"]
