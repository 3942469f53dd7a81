"""The four 2D training sets of the tiny-diffusion template (paper.md, "Datasets").

Every function returns float32 [n,2] built with numpy `default_rng(42)` (moons: sklearn's
`random_state=42`), exactly the template's formulas; another `seed` gives an independent
draw of the same distribution. Nothing here trains or writes files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import make_moons

NAMES = ("dino", "moons", "line", "circle")
N_POINTS = 100_000
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
TSV = DATA_DIR / "DatasaurusDozen.tsv"


def moons(n: int = N_POINTS, seed: int = 42) -> np.ndarray:
    x, _ = make_moons(n_samples=n, random_state=seed, noise=0.03)
    x[:, 0] = (x[:, 0] + 0.3) * 2 - 1
    x[:, 1] = (x[:, 1] + 0.3) * 3 - 1
    return x.astype(np.float32)


def line(n: int = N_POINTS, seed: int = 42) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.5, 0.5, n)
    y = rng.uniform(-1, 1, n)
    pts = np.stack((x, y), axis=1)
    pts *= 4
    return pts.astype(np.float32)


def circle(n: int = N_POINTS, seed: int = 42) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.round(rng.uniform(-0.5, 0.5, n) / 2, 1) * 2
    y = np.round(rng.uniform(-0.5, 0.5, n) / 2, 1) * 2
    norm = np.sqrt(x ** 2 + y ** 2) + 1e-10
    x /= norm
    y /= norm
    theta = 2 * np.pi * rng.uniform(0, 1, n)
    r = rng.uniform(0, 0.03, n)
    x += r * np.cos(theta)
    y += r * np.sin(theta)
    pts = np.stack((x, y), axis=1)
    pts *= 3
    return pts.astype(np.float32)


def dino(n: int = N_POINTS, seed: int = 42, tsv: Path = TSV) -> np.ndarray:
    df = pd.read_csv(tsv, sep="\t")
    df = df[df["dataset"] == "dino"]
    rng = np.random.default_rng(seed)
    ix = rng.integers(0, len(df), n)
    x = np.array(df["x"].iloc[ix].tolist()) + rng.normal(size=n) * 0.15
    y = np.array(df["y"].iloc[ix].tolist()) + rng.normal(size=n) * 0.15
    x = (x / 54 - 1) * 4
    y = (y / 48 - 1) * 4
    return np.stack((x, y), axis=1).astype(np.float32)


MAKERS = {"dino": dino, "moons": moons, "line": line, "circle": circle}


def make(name: str, n: int = N_POINTS, seed: int = 42) -> np.ndarray:
    """The dataset; `seed` other than 42 gives a fresh independent draw (for the KL floor)."""
    return MAKERS[name](n, seed=seed)


def stats(data: np.ndarray) -> dict:
    """Mean and (unbiased, ddof=1) covariance of the float32 points, computed in float64."""
    d = np.asarray(data, dtype=np.float64)
    return {"mean": d.mean(axis=0).tolist(), "cov": np.cov(d.T).tolist()}
