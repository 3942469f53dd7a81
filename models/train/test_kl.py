"""Checks the KL estimator (kl.py) against a brute-force numpy version, and the Rust fixture.

Run: python -m pytest models/train/test_kl.py
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest

import kl

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "kl"


def brute_force_kl_bits(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Independent O(n^2) version: full max-norm distance matrices, sorted."""
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    n, d = x.shape
    m = y.shape[0]
    dxx = np.abs(x[:, None, :] - x[None, :, :]).max(axis=-1)
    np.fill_diagonal(dxx, np.inf)  # exclude the point itself
    rho = np.sort(dxx, axis=1)[:, k - 1]
    dxy = np.abs(x[:, None, :] - y[None, :, :]).max(axis=-1)
    nu = np.sort(dxy, axis=1)[:, k - 1]
    nats = math.log(m) - math.log(n - 1) + d * (np.mean(np.log(nu)) - np.mean(np.log(rho)))
    return nats / math.log(2)


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("n,m,shift", [(300, 200, 0.0), (257, 411, 0.7), (120, 40, 2.0)])
def test_matches_brute_force(k, n, m, shift):
    rng = np.random.default_rng(1234 + n + m + k)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = (rng.normal(size=(m, 2)) * 1.3 + shift).astype(np.float32)
    assert kl.kl_bits(x, y, k=k) == pytest.approx(brute_force_kl_bits(x, y, k), abs=1e-12)


def test_reused_rho_gives_same_value():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(500, 2))
    y = rng.normal(size=(300, 2)) + 0.3
    assert kl.kl_bits(x, y, rho=kl.rho_k(x, 5)) == kl.kl_bits(x, y)


def test_same_distribution_is_near_zero_and_far_is_large():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 2))
    assert abs(kl.kl_bits(x, rng.normal(size=(4000, 2)))) < 0.1
    assert kl.kl_bits(x, rng.normal(size=(4000, 2)) + 3.0) > 2.0


def test_rejects_bad_k():
    x = np.zeros((5, 2)) + np.arange(5)[:, None]
    with pytest.raises(ValueError):
        kl.kl_bits(x, x[:3], k=5)


@pytest.mark.skipif(not (FIXTURE / "expected.json").exists(), reason="fixture not generated yet")
def test_rust_fixture_is_current():
    exp = json.loads((FIXTURE / "expected.json").read_text())
    data = np.load(FIXTURE / "data.npy")
    samples = np.load(FIXTURE / "samples.npy")
    assert data.dtype == np.float32 and samples.dtype == np.float32
    assert data.shape == (exp["n"], 2) and samples.shape == (exp["m"], 2)
    assert kl.kl_bits(data, samples, k=exp["k"]) == pytest.approx(exp["kl_bits"], abs=1e-12)
    assert brute_force_kl_bits(data, samples, exp["k"]) == pytest.approx(exp["kl_bits"], abs=1e-9)
