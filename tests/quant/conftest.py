"""A small GEMs trained for a few epochs on the lifelong fixture data (once per session): quantizing a
random model says little, its output distributions are flat."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from recsys.data.lifelong import LifelongDataModule
from recsys.models.gems_module import GEMsModule


@pytest.fixture(scope="session")
def gems_module_and_batch(prepared_lifelong):
    dm = LifelongDataModule(prepared_lifelong, recent=8, mid=32, max_train_per_user=8, batch_size=16,
                            eval_batch_size=16, sid_levels=2, sid_codebook=16)
    L.seed_everything(0, verbose=False)
    module = GEMsModule(dm.semantic_ids_path, dm.feature_cardinalities, item_attributes=dm.item_attributes_path,
                        play_time=dm.event_play_time, dim=32, heads=2, layers=2, encoder_layers=1,
                        top_k=8, summary_tokens=3, beam_width=20, ks=[5, 10], dropout=0.0, stage_epochs=[1, 1])
    trainer = L.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, limit_val_batches=0)
    trainer.fit(module, dm)
    module.eval()
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    torch.manual_seed(0)
    return module, batch
