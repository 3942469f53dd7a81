"""k-nearest-neighbour KL(data || model) estimator in bits (NPEET `kldiv`, paper.md "Evaluation").

KL = [ln m - ln(n-1) + d * (mean_i ln nu_k(i) - mean_i ln rho_k(i))] / ln 2, max norm, where
rho_k(i) is the distance from data point i to its k-th nearest *other* data point and nu_k(i)
its distance to the k-th nearest sample. Computed in float64. No sampling, no IO.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree


def rho_k(data: np.ndarray, k: int = 5) -> np.ndarray:
    """Distance of each data point to its k-th nearest other data point (max norm).

    The query asks for k+1 neighbours because the point itself (distance 0) is among them; with
    exact duplicates the self match may not come first, but a 0 is dropped either way.
    """
    x = np.asarray(data, dtype=np.float64)
    return cKDTree(x).query(x, k=[k + 1], p=np.inf)[0][:, 0]


def nu_k(data: np.ndarray, samples: np.ndarray, k: int = 5) -> np.ndarray:
    """Distance of each data point to its k-th nearest sample (max norm)."""
    x = np.asarray(data, dtype=np.float64)
    y = np.asarray(samples, dtype=np.float64)
    return cKDTree(y).query(x, k=[k], p=np.inf)[0][:, 0]


def kl_bits(data: np.ndarray, samples: np.ndarray, k: int = 5, rho: np.ndarray | None = None) -> float:
    """KL(data || samples) in bits; pass `rho` (from `rho_k`) to reuse it across sample sets."""
    x = np.asarray(data, dtype=np.float64)
    y = np.asarray(samples, dtype=np.float64)
    n, d = x.shape
    m = y.shape[0]
    if y.shape[1] != d:
        raise ValueError(f"data has {d} dims but samples have {y.shape[1]}")
    if not k < min(n, m):
        raise ValueError(f"k={k} must be smaller than n={n} and m={m}")
    if rho is None:
        rho = rho_k(x, k)
    nu = nu_k(x, y, k)
    const = math.log(m) - math.log(n - 1)
    return float((const + d * (np.log(nu).mean() - np.log(rho).mean())) / math.log(2))
