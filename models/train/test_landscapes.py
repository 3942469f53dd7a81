"""The landscape generator is deterministic: image i of set s depends only on (s, i).

Run: python -m pytest models/train/test_landscapes.py   (a few seconds)
"""
import numpy as np

import landscapes


def test_same_call_same_bytes():
    a = landscapes.make(6, seed=0)
    b = landscapes.make(6, seed=0)
    assert a.dtype == np.uint8 and a.shape == (6, 32, 32, 3)
    assert np.array_equal(a, b)


def test_image_depends_only_on_seed_and_index():
    whole = landscapes.make(8, seed=0)
    tail = landscapes.make(3, seed=0, start=5)
    assert np.array_equal(whole[5:], tail)
    assert np.array_equal(landscapes.render(0, 7), whole[7])


def test_other_seed_is_another_draw():
    a = landscapes.make(4, seed=0)
    b = landscapes.make(4, seed=1)
    assert all(not np.array_equal(a[i], b[i]) for i in range(4))


def test_images_have_structure_and_detail():
    x = landscapes.make(32, seed=0).astype(np.float64) / 255
    # not blank, not saturated, varied between images, and with pixel-level detail
    assert 0.1 < x.mean() < 0.8
    assert x.reshape(32, -1).mean(1).std() > 0.03
    assert np.abs(np.diff(x, axis=2)).mean() > 0.01


def test_model_space_round_trip():
    u8 = landscapes.make(3, seed=2)
    x = landscapes.to_model(u8)
    assert x.dtype == np.float32 and x.shape == (3, 3, 32, 32)
    assert x.min() >= -1 and x.max() <= 1
    assert np.array_equal(landscapes.from_model(x), u8)
