"""Post-training FP8 quantization (OneRec-V2 FP8 PTQ, arXiv 2603.11486), statistics, export and serving.

* :mod:`recsys.quant.fp8`: E4M3 casts and :class:`Fp8Linear` (``torch._scaled_mm`` or a reference path);
* :mod:`recsys.quant.ptq`: which linears to quantize (:class:`Fp8Config`) and :func:`quantize_fp8`;
* :mod:`recsys.quant.stats`: per-layer weight and activation statistics over calibration batches;
* :mod:`recsys.quant.export` (``recsys export``), :mod:`recsys.quant.gems_serving`,
  :mod:`recsys.quant.a2gen_serving`: exportable programs and the artifact (:mod:`recsys.quant.artifact`);
* :mod:`recsys.quant.runtime`: the serving runtime (no training stack), :mod:`recsys.quant.serve_bench`.
"""

from recsys.quant.fp8 import Fp8Linear
from recsys.quant.ptq import Fp8Config, QuantReport, quantize_fp8
from recsys.quant.stats import collect_statistics

__all__ = ["Fp8Config", "Fp8Linear", "QuantReport", "collect_statistics", "quantize_fp8"]
