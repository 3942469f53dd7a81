"""The few-step image model's distillation target is right: a batch whose "teacher states" are
DDIM steps of the student itself has zero loss, and one that is off by a known amount has the
loss that offset predicts. Also checks that `unipc(record=...)` records the states the sampler
passes through (its final image is unchanged by recording).

Run: python -m pytest models/train/test_image_fewstep.py   (a few seconds)
"""
import math

import numpy as np
import torch

import image_diffusion
import image_fewstep
import image_nets
import image_samplers


def _model():
    torch.manual_seed(0)
    return image_nets.build("dualscale").eval()


def _ddim_chain(model, x_T):
    """States on GRID and the end point, each the model's own DDIM step from the one before."""
    grid = image_fewstep.GRID
    ac = image_diffusion.CosineSchedule().alphas_cumprod.double()
    states, x = [x_T], x_T.double()
    for i, t in enumerate(grid):
        with torch.no_grad():
            v = image_nets.output_of(model, x.float(), torch.full((len(x),), float(t))).double()
        a, s = math.sqrt(float(ac[t])), math.sqrt(1 - float(ac[t]))
        x0, eps = a * x - s * v, s * x + a * v
        a_n = float(ac[grid[i + 1]]) if i + 1 < len(grid) else 1.0
        x = math.sqrt(a_n) * x0 + math.sqrt(1 - a_n) * eps
        states.append(x.float())
    return torch.stack(states, dim=1)


def test_self_consistent_trajectories_have_zero_loss():
    model = _model()
    batch = _ddim_chain(model, torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        loss = image_fewstep.distillation_loss(model, batch, g, None).item()
        moved = batch.clone()
        moved[:, 1:] += 0.01                   # every target state off by 0.01: the loss must see it
        loss_moved = image_fewstep.distillation_loss(model, moved, torch.Generator().manual_seed(2), None).item()
    assert loss < 1e-8, loss
    assert loss_moved > 1e-6, loss_moved


def test_unipc_records_the_states_it_passes_through():
    model = image_samplers.TorchModel(_model())
    x_T = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    ts = [999, 802, 164, 0]
    plain = image_samplers.unipc(model, ts, x_T, None)
    record = {802: None, 164: None}
    recorded = image_samplers.unipc(model, ts, x_T, None, record=record)
    np.testing.assert_array_equal(plain, recorded)
    assert all(v is not None and v.shape == x_T.shape for v in record.values())
    assert not np.allclose(record[802], record[164])
