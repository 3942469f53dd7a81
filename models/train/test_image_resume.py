"""An image training run killed between checkpoints and resumed ends bit-identical to an
uninterrupted one, and the resumed run refuses a checkpoint written with another config.

Run: python -m pytest models/train/test_image_resume.py   (about 20 s on one core)
"""
from dataclasses import replace

import pytest
import torch

import image_diffusion
import landscapes


def _setup():
    torch.set_num_threads(1)
    data = torch.from_numpy(landscapes.to_model(landscapes.make(20, seed=3)))
    # 30 steps of batch 8 cross epoch boundaries (3 batches / epoch) and the EMA warm-up (copy until 10)
    cfg = replace(image_diffusion.ImageTrainConfig(), steps=30, batch_size=8, ckpt_every=10, warmup=5,
                  ema_update_after_step=10)
    return data, cfg, image_diffusion.CosineSchedule()


@pytest.mark.parametrize("arch", ["dualscale", "baseline"])
def test_killed_and_resumed_image_run_is_bit_identical(tmp_path, arch):
    data, cfg, sched = _setup()
    quiet = dict(log=lambda _: None)
    straight = image_diffusion.train(tmp_path / "a", arch, 5, data, cfg, sched, **quiet)
    assert image_diffusion.train(tmp_path / "b", arch, 5, data, cfg, sched, stop_at=17, **quiet) == {}
    assert (tmp_path / "b" / "ckpt.pt").exists() and not (tmp_path / "b" / "ema.pt").exists()
    # the partial checkpoint can be loaded as a preview
    _, steps = image_diffusion.load_ema(tmp_path / "b", arch, partial_ok=True)
    assert steps == 10
    resumed = image_diffusion.train(tmp_path / "b", arch, 5, data, cfg, sched, **quiet)
    assert resumed["resumed_at_steps"] == [10]
    a = torch.load(tmp_path / "a" / "ema.pt")
    b = torch.load(tmp_path / "b" / "ema.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight["final_loss_last1000"] == resumed["final_loss_last1000"]


def test_resume_refuses_another_config(tmp_path):
    data, cfg, sched = _setup()
    image_diffusion.train(tmp_path / "c", "baseline", 0, data, cfg, sched, log=lambda _: None, stop_at=12)
    with pytest.raises(RuntimeError, match="another config"):
        image_diffusion.train(tmp_path / "c", "baseline", 0, data, replace(cfg, lr=5e-4), sched, log=lambda _: None)
