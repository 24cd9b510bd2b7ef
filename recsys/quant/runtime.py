"""The serving runtime: load a verified artifact (:mod:`recsys.quant.artifact`) and answer requests, with
torch, safetensors and the beam search only (no Lightning, no torchrec, nothing unpickled).

>>> runtime = GEMsRuntime.load("artifacts/gems-fp8")                        # doctest: +SKIP
>>> history = {"items": torch.tensor([5, 9, 2, 7]),                          # oldest first
...            "actions": torch.tensor([1, 1, 3, 1]), "ages": torch.tensor([900., 40., 3., .5]),
...            "plays": torch.tensor([31., 2.5, 60., 8.])}                     # seconds; optional
>>> items, scores = runtime.recommend([history], k=100)                      # doctest: +SKIP

A history longer than the recent + mid-term windows has its older events folded into the lifecycle
state on the fly; for long-lived users, fold them once offline (``state = runtime.fold(old_events)``, sums
of states add up) and pass ``lifecycle=[state]`` with only the newest events.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from recsys.models.beam_search import constrained_beam_search
from recsys.models.semantic_ids import SemanticIds
from recsys.quant.artifact import ArtifactError, load_program, read_verified_manifest

#: items (int64, ids >= 1), actions (int64 bitmasks), ages (hours); optional: authors, plays (seconds played;
#: 0 or absent = unknown, read by models trained with play times only)
History = dict[str, torch.Tensor]
FIELDS = ("items", "authors", "actions", "ages", "plays")


def _device(manifest: dict, folder: Path) -> torch.device:
    """The device the artifact's programs were traced for (they run there only)."""
    device = torch.device(manifest.get("device", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ArtifactError(f"{folder}: exported for a CUDA device, and this machine has none; export for cpu")
    return device


def _dtype(manifest: dict) -> torch.dtype:
    """The dtype activations flow in (an fp8 artifact's unquantized part may be bf16 or fp32)."""
    name = manifest.get("dtype", "bfloat16" if manifest["precision"] == "bf16" else "float32")
    if name not in ("float32", "bfloat16"):
        raise ArtifactError(f"unknown activation dtype {name!r} in the manifest")
    return getattr(torch, name)


def load_runtime(folder: str | Path) -> GEMsRuntime | A2GenRuntime:
    """The runtime of whatever model the artifact holds."""
    manifest = read_verified_manifest(Path(folder))
    runtimes = {"gems": GEMsRuntime, "a2gen": A2GenRuntime}
    if manifest.get("model") not in runtimes:
        raise ArtifactError(f"{folder}: unknown model {manifest.get('model')!r}")
    return runtimes[manifest["model"]].load(folder)


class GEMsRuntime:
    def __init__(self, folder: Path, manifest: dict, programs: dict, semantic_ids: SemanticIds,
                 item_author: torch.Tensor | None) -> None:
        self.folder, self.manifest, self.programs = folder, manifest, programs
        self.config = manifest["config"]
        self.semantic_ids, self.trie = semantic_ids, semantic_ids.trie()
        self.item_author = item_author
        self.dtype = _dtype(manifest)
        self.device = _device(manifest, folder)
        self.trie = self.trie.to(self.device)

    @classmethod
    def load(cls, folder: str | Path) -> GEMsRuntime:
        folder = Path(folder)
        manifest = read_verified_manifest(folder)
        if manifest.get("model") != "gems":
            raise ArtifactError(f"{folder}: a {manifest.get('model')!r} artifact, expected a GEMs one")
        weights = load_file(str(folder / "weights.safetensors"), device=str(_device(manifest, folder)))
        programs = {name: load_program(folder / p["file"], weights) for name, p in manifest["programs"].items()}
        author_file = folder / "item_author.safetensors"
        item_author = load_file(str(author_file))["author"] if author_file.exists() else None
        return cls(folder, manifest, programs, SemanticIds.load(folder / "semantic_ids"), item_author)

    @property
    def recent(self) -> int:
        return int(self.config["recent"])

    @property
    def mid(self) -> int:
        return int(self.config["mid"]) if "mid" in self.config["streams"] else 0

    # -- inputs ---------------------------------------------------------------------------------------------
    def _authors(self, history: History) -> torch.Tensor:
        if "authors" in history:
            return history["authors"].long()
        if self.item_author is not None:
            return self.item_author[history["items"].long()]
        return torch.zeros_like(history["items"], dtype=torch.long)

    @staticmethod
    def _check(history: History, index: int) -> None:
        for key in ("items", "actions", "ages"):
            if key not in history:
                raise ValueError(f"history {index}: missing {key!r} (expected items, actions, ages[, authors, plays])")
        n = history["items"].shape[0]
        if any(history[k].shape != (n,) for k in history):
            raise ValueError(f"history {index}: items, actions, ages (and authors, plays) must be 1-D of equal length")

    def _events(self, history: History) -> History:
        """Every field of :data:`FIELDS` (authors from the item table, unknown plays as 0)."""
        plays = history["plays"].float() if "plays" in history else torch.zeros(history["items"].shape[0])
        return {**{k: history[k] for k in ("items", "actions", "ages")}, "authors": self._authors(history),
                "plays": plays}

    def _windows(self, parts: list[History], width: int) -> dict[str, torch.Tensor]:
        """The parts padded to ``width``: :data:`FIELDS` ``[B, width]`` and ``lengths [B]``."""
        b = len(parts)
        out = {k: torch.zeros(b, width, dtype=torch.float32 if k in ("ages", "plays") else torch.long) for k in FIELDS}
        out["lengths"] = torch.zeros(b, dtype=torch.long)
        for i, p in enumerate(parts):
            n = p["items"].shape[0]
            out["lengths"][i] = n
            for key in FIELDS:
                out[key][i, :n] = p[key].cpu()
        return {k: t.to(self.device) for k, t in out.items()}

    def _inputs(self, program: str, values: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """``program``'s inputs in the order its manifest entry names them (artifacts exported before
        play times were an input simply do not name ``plays``)."""
        return [values[name] for name in self.manifest["programs"][program]["inputs"]]

    def fold(self, history: History) -> tuple[torch.Tensor, torch.Tensor]:
        """Lifecycle state ``(total [d, d], count [])`` of a user's events (states of disjoint events add)."""
        if "life" not in self.config["streams"]:
            raise ValueError("this model has no lifecycle stream")
        self._check(history, 0)
        part = self._events(history)
        if part["items"].shape[0] == 0:
            d = self.config["dim"]
            return (torch.zeros(d, d, dtype=self.dtype, device=self.device),
                    torch.zeros((), dtype=self.dtype, device=self.device))
        total, count = self.programs["fold"](*self._inputs("fold", self._windows([part], part["items"].shape[0])))
        return total[0], count[0]

    # -- requests -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, histories: list[History], lifecycle: list[tuple[torch.Tensor, torch.Tensor]] | None = None
               ) -> tuple[torch.Tensor, ...]:
        """Split each history into its windows, fold what is older, and run the ``encode`` program."""
        streams = self.config["streams"]
        recents, mids, states = [], [], []
        for i, h in enumerate(histories):
            self._check(h, i)
            full = self._events(h)
            n = full["items"].shape[0]
            r0 = max(n - self.recent, 0)
            m0 = max(r0 - self.mid, 0)
            recents.append({k: v[r0:] for k, v in full.items()})
            mids.append({k: v[m0:r0] for k, v in full.items()})
            if "life" in streams:
                total, count = self.fold({k: v[:m0] for k, v in full.items()})
                if lifecycle is not None:
                    total = total + lifecycle[i][0].to(self.device, self.dtype)
                    count = count + lifecycle[i][1].to(self.device, self.dtype)
                states.append((total, count))
        values: dict[str, torch.Tensor] = {}
        for stream, parts, width in (("recent", recents, self.recent), ("mid", mids, self.mid)):
            if stream in streams:
                values |= {f"{stream}_{k}": v for k, v in self._windows(parts, width).items()}
        if "life" in streams:
            values["life_total"] = torch.stack([s[0] for s in states])
            values["life_count"] = torch.stack([s[1] for s in states])
        return self.programs["encode"](*self._inputs("encode", values))

    @torch.no_grad()
    def recommend(self, histories: list[History], k: int = 100,
                  lifecycle: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` items per history by constrained beam search (beam width ``k``): ``(items [B, k],
        scores [B, k])``, best first; a score is the sum of the item's SID token log-probabilities; item -1
        where fewer than ``k`` valid SIDs exist."""
        memory = self.encode(histories, lifecycle)
        b = len(histories)

        def step(prefix: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
            level, beams = prefix.shape[1], prefix.shape[0] // b  # one beam a user at the first level
            tokens = prefix[:, -1] if level else torch.zeros(prefix.shape[0], dtype=torch.long, device=self.device)
            cache = tuple(c.unflatten(0, (b, beams)) for c in state["cache"])
            log_probs, new = self.programs[f"step_{level}"](tokens.view(b, beams), cache, memory)
            return log_probs.reshape(b * beams, -1), {"cache": tuple(c.flatten(0, 1) for c in new)}

        sizes = self.semantic_ids.codebook_sizes
        sids, scores = constrained_beam_search(step, b, len(sizes), sizes, k, self.trie, state={"cache": ()},
                                               device=self.device, first_step_per_row=True)
        return self.semantic_ids.item_of(sids.cpu()), scores.cpu()


class A2GenRuntime:
    """Scores one user's candidates with an exported A2Gen: per action the probability that it occurs and
    its predicted time. Ids are the prepared dataset's (its ``vocab/`` maps raw ids to them)."""

    def __init__(self, folder: Path, manifest: dict, program) -> None:
        self.folder, self.manifest, self.program = folder, manifest, program
        self.config = manifest["config"]
        self.device = _device(manifest, folder)

    @classmethod
    def load(cls, folder: str | Path) -> A2GenRuntime:
        folder = Path(folder)
        manifest = read_verified_manifest(folder)
        if manifest.get("model") != "a2gen":
            raise ArtifactError(f"{folder}: a {manifest.get('model')!r} artifact, expected an A2Gen one")
        weights = load_file(str(folder / "weights.safetensors"), device=str(_device(manifest, folder)))
        return cls(folder, manifest, load_program(folder / manifest["programs"]["score"]["file"], weights))

    @torch.no_grad()
    def score(self, user: dict[str, int], candidates: dict[str, torch.Tensor], history: dict[str, torch.Tensor] | None = None,
              context: dict[str, int] | None = None, tags: list[torch.Tensor] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probs [C, K], times [C, K + 1])`` for ``C`` candidates.

        ``user`` / ``context``: one id per user / context key (``config["user_keys"]``, ``["context_keys"]``);
        ``candidates``: ``[C]`` ids per item key (``config["item_keys"]``); ``tags``: per candidate its tag
        ids (models with tags); ``history``: ``[L]`` ids per history key (``config["history_keys"]``) plus
        ``flags`` and ``times`` ``[L, slots]``, oldest first (``None``: no history)."""
        cfg = self.config
        missing = [k for k in cfg["user_keys"] if k not in user] + [k for k in cfg["item_keys"] if k not in candidates]
        missing += [k for k in cfg["context_keys"] if k not in (context or {})]
        if missing:
            raise ValueError(f"missing feature ids: {missing}")
        c = int(candidates[cfg["item_keys"][0]].shape[0])
        ids = {k: torch.full((c,), int(user[k]), dtype=torch.long) for k in cfg["user_keys"]}
        ids |= {k: candidates[k].long() for k in cfg["item_keys"]}
        ids |= {k: torch.full((c,), int(context[k]), dtype=torch.long) for k in cfg["context_keys"]}
        width = max([1, *(len(t) for t in tags or [])])
        tag_ids, tag_lengths = torch.zeros(c, width, dtype=torch.long), torch.zeros(c, dtype=torch.long)
        for i, t in enumerate(tags or []):
            tag_ids[i, : len(t)], tag_lengths[i] = torch.as_tensor(t), len(t)
        slots = int(cfg["slots"])
        if history is None or int(history[cfg["history_keys"][0]].shape[0]) == 0:
            hist = {k: torch.zeros(1, dtype=torch.long) for k in cfg["history_keys"]}
            flags, times, length = torch.zeros(1, slots), torch.zeros(1, slots), 0
        else:
            hist = {k: history[k].long() for k in cfg["history_keys"]}
            flags, times = history["flags"].float(), history["times"].float()
            length = int(flags.shape[0])
        dev = self.device
        probs, times = self.program(ids={k: v.to(dev) for k, v in ids.items()}, tags=tag_ids.to(dev),
                                    tag_lengths=tag_lengths.to(dev), history={k: v.to(dev) for k, v in hist.items()},
                                    history_flags=flags.to(dev), history_times=times.to(dev),
                                    history_length=torch.tensor([length], device=dev))
        return probs.cpu(), times.cpu()
