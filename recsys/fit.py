"""``recsys fit | validate | test``: Lightning's CLI over the toolkit's models and data modules.

    recsys fit --config configs/a2gen_tmall.yaml
    recsys fit --config configs/a2gen_tmall.yaml --ckpt_path last          # resume
    recsys test --config configs/a2gen_tmall.yaml --ckpt_path runs/.../best.ckpt
    recsys fit --config configs/a2gen_tmall.yaml --model.init_args.optimizer adamw --trainer.max_epochs 3

Model and data are chosen by ``class_path`` in the config (any LightningModule / LightningDataModule).
What a model needs to know about the data is linked from the data module when both are built: the
feature vocabularies and chain layout for ranking models (``cardinalities``, ``spec``), the catalogue
size for retrieval models (``num_items``).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import recsys.models.sharding  # noqa: F401  (registers the "torchrec" strategy)

#: Model __init__ argument -> the data module attribute it is linked from.
LINKS = {
    "cardinalities": "feature_cardinalities",
    "spec": "spec_dict",
    "num_items": "num_items",
    "semantic_ids": "semantic_ids_path",
    "item_attributes": "item_attributes_path",
    "play_time": "event_play_time",
}


class RecsysCLI(LightningCLI):
    def __init__(self, *args: Any, links: dict[str, str], **kwargs: Any) -> None:
        self._links = links
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for target, source in self._links.items():
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")


def _model_class_path(argv: list[str]) -> str | None:
    """The model's class_path from ``--config`` files and ``--model`` overrides (the last one wins)."""
    found = None
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
        if arg.startswith("--config"):
            config = yaml.safe_load(Path(value).read_text()) or {}
            model = config.get("model")
            if isinstance(model, dict) and "class_path" in model:
                found = model["class_path"]
        elif arg.startswith(("--model=", "--model.class_path")) or arg == "--model":
            found = value
    return found


def links_for(class_path: str | None) -> dict[str, str]:
    """The links the model's __init__ asks for (by parameter name)."""
    if not class_path:
        return {}
    module, _, name = class_path.rpartition(".")
    params = inspect.signature(getattr(importlib.import_module(module), name).__init__).parameters
    return {target: source for target, source in LINKS.items() if target in params}


def main(argv: list[str] | None = None) -> None:
    from recsys.models.distributed import finish_process_group

    argv = sys.argv[1:] if argv is None else argv
    RecsysCLI(
        args=argv,
        links=links_for(_model_class_path(argv)),
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
    )
    finish_process_group()  # every rank got here: leave together (see its docstring)


def build_model(argv: list[str]) -> Any:
    """The LightningModule a ``recsys fit`` command line would train (its data module is built too, for
    the links), without training."""
    cli = RecsysCLI(args=argv, links=links_for(_model_class_path(argv)), subclass_mode_model=True,
                    subclass_mode_data=True, run=False, save_config_callback=None)
    return cli.model
