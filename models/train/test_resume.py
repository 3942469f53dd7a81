"""A training run killed between checkpoints and resumed ends bit-identical to an uninterrupted one.

Run: python -m pytest models/train/test_resume.py   (about 10 s on one core)
"""
from dataclasses import replace

import numpy as np
import torch

import diffusion


def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    torch.set_num_threads(1)
    data = np.random.default_rng(0).normal(size=(1000, 2)).astype(np.float32)
    # 130 steps crosses an epoch boundary (4 batches/epoch) and the EMA warm-up (copy until step 100)
    cfg = replace(diffusion.TrainConfig(), steps=130, batch_size=256, ckpt_every=20)
    sched = diffusion.Schedule()
    straight = diffusion.train(tmp_path / "a", "dualscale", 3, data, cfg, sched, log=lambda _: None)
    assert diffusion.train(tmp_path / "b", "dualscale", 3, data, cfg, sched, log=lambda _: None, stop_at=57) == {}
    assert (tmp_path / "b" / "ckpt.pt").exists() and not (tmp_path / "b" / "ema.pt").exists()
    resumed = diffusion.train(tmp_path / "b", "dualscale", 3, data, cfg, sched, log=lambda _: None)
    assert resumed["resumed_at_steps"] == [40]
    a = torch.load(tmp_path / "a" / "ema.pt")
    b = torch.load(tmp_path / "b" / "ema.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight["final_loss_last500"] == resumed["final_loss_last500"]
