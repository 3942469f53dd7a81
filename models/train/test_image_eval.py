"""The Fréchet distance's feature space is fixed (same weights every time) and the distance
behaves as a distance on simple cases.

Run: python -m pytest models/train/test_image_eval.py   (a few seconds)
"""
import numpy as np
import torch

import image_eval


def test_feature_net_is_fixed():
    a, b = image_eval.RandomFeatures(), image_eval.RandomFeatures()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (4, 3, 32, 32)).astype(np.float32))
    f = a(x)
    assert f.shape == (4, 496)
    assert torch.equal(f, b(x))


def test_frechet_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 8))
    assert abs(image_eval.frechet(a, a)) < 1e-8
    # N(0, I) vs N(m, I): the distance is |m|^2 (plus sampling noise)
    b = rng.normal(size=(4000, 8)) + 1.0
    assert abs(image_eval.frechet(a, b) - 8.0) < 0.3
