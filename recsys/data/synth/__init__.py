"""Synthetic KuaiRand, Tmall and MovieLens datasets in the exact file format of the public releases.

Nothing can be downloaded in some environments, so the toolkit writes files with the real names, headers,
column order, dtypes and byte formatting of the public releases, with planted structure (latent factors,
Zipf popularity, action chains, drifting and returning interests, the real quirks) that models can learn
and tests can check against the ground truth (:func:`kuairand_truth`, :func:`tmall_truth`).

>>> report = synthesize("kuairand-pure", "/tmp/kuairand/data", users=200, items=500)  # doctest: +SKIP
>>> report.files["log_standard_4_08_to_4_21_pure.csv"]  # doctest: +SKIP

The generative process is documented in :mod:`.latent` (shared), :mod:`.kuairand` and :mod:`.tmall`;
MovieLens (:mod:`.movielens`) has its own: hidden themes planted as words in the movie titles.
Row counts scale as:

* KuaiRand: standard logs ``~ users * days * rows_per_user_day * (1 + duplicate_rate)`` (exact for
  ``days=30`` or ``late_volume=1``; Pure's default ``late_volume=0.198`` puts less volume on dates from
  20220422, as the real files), random log ``~ users * (days on or after 20220422) *
  random_rows_per_user_day * (1 + duplicate_rate)``: :meth:`KuaiRandSynthConfig.expected_rows`;
* Tmall: ``~ users * rows_per_user_day * (days - 1 + double11_boost)``: :meth:`TmallSynthConfig.expected_rows`;
* MovieLens: ``~ users * ratings_per_user`` (default: the release's 106.0 / 165.6):
  :meth:`MovieLensSynthConfig.expected_rows`.

For example a 10M-row Tmall log: ``synthesize("tmall", out, users=77_000)`` (about 14 s on 2 cores); a
40M-row KuaiRand standard log: ``synthesize("kuairand-pure", out, rows_per_user_day=48.2, late_volume=1)``
(about 65 s). Memory stays bounded (chunks of about ``chunk_rows`` rows appended to the open files).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .kuairand import KuaiRandSynthConfig, KuaiRandTruth, kuairand_dates, kuairand_truth, write_kuairand
from .latent import LatentConfig
from .tmall_rec import write_tmall_rec
from .movielens import THEMES, MovieLensSynthConfig, MovieLensTruth, movielens_truth, write_movielens
from .tmall import TmallSynthConfig, TmallTruth, tmall_dates, tmall_truth, write_tmall

__all__ = [
    "DATASETS",
    "THEMES",
    "KuaiRandSynthConfig",
    "KuaiRandTruth",
    "LatentConfig",
    "MovieLensSynthConfig",
    "MovieLensTruth",
    "SynthReport",
    "TmallSynthConfig",
    "TmallTruth",
    "kuairand_dates",
    "kuairand_truth",
    "make_config",
    "movielens_truth",
    "synthesize",
    "tmall_dates",
    "tmall_truth",
    "write_kuairand",
    "write_movielens",
    "write_tmall",
]

#: Dataset name -> KuaiRand or MovieLens release (``None`` for Tmall).
DATASETS: dict[str, str | None] = {
    "tmall": None, "tmall-rec": None, "kuairand-pure": "pure", "kuairand-1k": "1k", "kuairand-27k": "27k",
    "movielens-100k": "100k", "movielens-1m": "1m",
}
#: Names of the files holding the interaction logs (for :attr:`SynthReport.log_rows`).
_RATINGS_FILES = ("ratings.dat", "u.data")
TMALL_REC_LOG_FILE = "tianchi_2014002_rec_tmall_log.csv"

SynthConfig = KuaiRandSynthConfig | TmallSynthConfig | MovieLensSynthConfig


def _config_class(dataset: str) -> type:
    if DATASETS[dataset] is None:
        return TmallSynthConfig
    return MovieLensSynthConfig if dataset.startswith("movielens-") else KuaiRandSynthConfig


@dataclass(frozen=True)
class SynthReport:
    """What :func:`synthesize` wrote."""

    dataset: str
    #: The output folder (the files lie directly under it, like a real download's ``data/`` folder).
    out: Path
    config: SynthConfig
    #: File name -> number of data rows (header excluded), in the release's file order.
    files: dict[str, int]
    #: Wall-clock seconds of the generation.
    seconds: float

    @property
    def log_rows(self) -> int:
        """Rows of the interaction logs (KuaiRand ``log_*`` files, Tmall ``user_log_format1.csv``, MovieLens
        ``ratings.dat`` / ``u.data``)."""
        return sum(n for name, n in self.files.items()
                   if name.startswith(("log_", "user_log")) or name in _RATINGS_FILES or name == TMALL_REC_LOG_FILE)

    @property
    def paths(self) -> dict[str, Path]:
        return {name: self.out / name for name in self.files}


def make_config(
    dataset: str,
    users: int | None = None,
    items: int | None = None,
    days: int | None = None,
    seed: int = 0,
    **overrides: Any,
) -> SynthConfig:
    """The config :func:`synthesize` uses: ``None`` arguments keep the dataset's defaults (real sizes)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    cls = _config_class(dataset)
    if cls is MovieLensSynthConfig and days is not None:
        raise ValueError("days does not apply to MovieLens: its ratings span the real release's dates")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"unknown {cls.__name__} field(s) {unknown}; valid: {sorted(names)}")
    if "release" in overrides:
        raise TypeError("the release is chosen by the dataset name")
    kwargs: dict[str, Any] = {"seed": seed, **overrides}
    for key, value in (("users", users), ("items", items), ("days", days)):
        if value is not None:
            kwargs[key] = value
    if DATASETS[dataset] is not None:
        kwargs["release"] = DATASETS[dataset]
    return cls(**kwargs)


def synthesize(
    dataset: str,
    out: str | os.PathLike,
    users: int | None = None,
    items: int | None = None,
    days: int | None = None,
    seed: int = 0,
    *,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> SynthReport:
    """Write a synthetic ``dataset`` (one of :data:`DATASETS`) under ``out``.

    ``users``/``items``/``days`` default to the real release (KuaiRand ``days`` 30, Tmall 186; MovieLens
    takes no ``days``); ``overrides`` are fields of :class:`KuaiRandSynthConfig` / :class:`TmallSynthConfig`
    / :class:`MovieLensSynthConfig` (e.g. ``rows_per_user_day=40``, ``time_stamp_zero_pad=True``,
    ``missing_brand_text="NULL"``, ``ratings_per_user=50``).
    The same arguments give byte-identical files.

    Files are written into a temporary sibling folder renamed to ``out`` at the end, so an interrupted run
    leaves no half-written output. A non-empty existing ``out`` raises :class:`FileExistsError` unless
    ``overwrite=True`` (then it is replaced only once the new files are complete).
    """
    cfg = make_config(dataset, users, items, days, seed, **overrides)
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a directory")
        if any(out.iterdir()) and not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    tmp.mkdir()
    t0 = time.perf_counter()
    try:
        if dataset == "tmall-rec":
            files = write_tmall_rec(cfg, tmp, progress=progress)
        elif isinstance(cfg, TmallSynthConfig):
            files = write_tmall(cfg, tmp, progress=progress)
        elif isinstance(cfg, MovieLensSynthConfig):
            files = write_movielens(cfg, tmp, progress=progress)
        else:
            files = write_kuairand(cfg, tmp, progress=progress)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{tag}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SynthReport(dataset=dataset, out=out, config=cfg, files=files, seconds=time.perf_counter() - t0)
