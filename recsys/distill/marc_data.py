"""What MARC reads from a prepared dataset: every layer of a text encoder over its item and user texts
(cached), and the training split's (user, item, label) pairs of the main action.

>>> layers = encode_dataset("data/movielens-1m", "minilm", "runs/marc/cache")      # doctest: +SKIP
>>> item_h, user_h = layers[6]              # layer 6 of MiniLM: [num_items, 384], [num_users, 384]
>>> users, items, labels = training_pairs("data/movielens-1m")                      # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recsys.data.chain_ranking import ChainDataModule
from recsys.data.prepared import PreparedDataset
from recsys.data.splits import TRAIN


def encoder_folder(encoder: str | Path) -> Path:
    """A local transformers model folder; ``"minilm"`` = all-MiniLM-L6-v2 from the ``minilm`` extra."""
    if str(encoder) == "minilm":
        from recsys.distill.encoder import minilm_folder

        return minilm_folder()
    return Path(encoder)


def encode_dataset(data: str | Path, encoder: str | Path, cache: str | Path, *, pooling: str = "mean",
                   max_length: int = 128, batch_size: int = 64, item_template: str | None = None,
                   user_template: str | None = None, device: str | None = None,
                   ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer: (item_h [num_items, H], user_h [num_users, H])}`` (layer 0 = the embedding output), rows
    aligned with the prepared vocabularies (row 0 = padding, zeros). Hidden states are cached under
    ``cache/items`` and ``cache/users`` and reused (:func:`recsys.distill.encoder.encode_texts`)."""
    from recsys.distill.encoder import encode_texts
    from recsys.distill.text import item_texts, user_texts

    dataset = PreparedDataset(data)
    folder = encoder_folder(encoder)
    cache = Path(cache)
    out = {}
    for entity, texts in (("items", item_texts(dataset, item_template)), ("users", user_texts(dataset, user_template))):
        states = encode_texts(texts, folder, out=cache / entity, pooling=pooling, max_length=max_length,
                              batch_size=batch_size, device=device)
        out[entity] = [layer.float() for layer in states.layers]
    return {layer: (out["items"][layer], out["users"][layer]) for layer in range(len(out["items"]))}


def main_label_of(data: str | Path, main_label: str | None = None) -> str:
    """The action MARC and the probe predict: ``main_label``, or the dataset's default (Tmall purchase,
    KuaiRand and MovieLens like), checked against the dataset's chain actions."""
    from recsys.data.chains import spec_for
    from recsys.distill.stream import DEFAULT_MAIN

    name = PreparedDataset(data).manifest.dataset
    actions = spec_for(name).actions
    main = main_label or DEFAULT_MAIN.get(name.split("-")[0], actions[0])
    if main not in actions:
        raise ValueError(f"main label {main!r} is not a chain action of {data}: {actions}")
    return main


def training_pairs(data: str | Path, main_label: str | None = None, split: int = TRAIN,
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(users, items, labels)`` of the training split's chains (the CTR models' samples), the label
    being whether the main action occurred (default: the dataset's, e.g. MovieLens ``like``); ``split``:
    another split's (``recsys.data.splits.VALID`` for MARC's early stopping)."""
    dm = ChainDataModule(str(data))
    dm.setup()
    chains = dm.tables.chains
    actions = dm.spec.actions
    main = main_label_of(data, main_label)
    train = chains.split == split
    labels = chains.occurred[train, actions.index(main)]
    return (torch.from_numpy(chains.user[train].astype(np.int64)), torch.from_numpy(chains.item[train].astype(np.int64)),
            torch.from_numpy(labels.astype(np.float32)))
