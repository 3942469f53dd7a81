"""Quality of the image models: a Fréchet distance in a fixed feature space, samples, gate weights.

Feature space ("LFD", landscape Fréchet distance), 496 dimensions, defined entirely by this file:
- composition: the image averaged over 8x8-pixel cells, 4x4x3 = 48 values (horizon height,
  sky / ground colours, where the sun is);
- texture and edges at three scales: a fixed random-weight conv net (weights drawn once from
  `torch.Generator().manual_seed(20261206)`, He-normal, no training, no download):
  conv3x3 3->64, ReLU, global mean (64) | 2x2 avg-pool, conv3x3 64->128, ReLU, global mean (128)
  | 2x2 avg-pool, conv3x3 128->256, ReLU, global mean (256);
- every dimension is then standardised with the mean and std of the first 5,000 training images
  (set seed 0), so no block dominates the distance by its scale; a std is floored at 0.1 x the
  median std of its block, so a random ReLU unit that is almost always zero on the data (28 of
  the 448 conv units) cannot turn a rare activation into a z-score of 10^5.
The Fréchet distance is ||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2)) between the Gaussian
fits (float64) of 2,000 generated and 2,000 held-out images (set seed 1; never used for training).

Why it is sound here: Inception features cannot be downloaded and were trained on other images;
random conv features are known to carry texture statistics (Ustyuzhaninov et al. 2016; random
embeddings as an evaluation space, Naeem et al. 2020), the pooled colour layout carries the
composition that random conv means discard, and `fd_sanity` checks that the distance ranks
known degradations: held-out vs training set (the floor) < mild noise / blur < strong noise /
blur, patch shuffling (composition destroyed, textures kept) and mode collapse (200 distinct
images repeated) are large. Nothing here trains a model.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import landscapes
import make_images

FEATURE_SEED = 20261206
N_STATS = 5_000
N_FD = 2_000
BLOCKS = (slice(0, 48), slice(48, 112), slice(112, 240), slice(240, 496))  # pixels, conv1, conv2, conv3
STD_FLOOR = 0.1


class RandomFeatures(nn.Module):
    """The fixed random conv net of the feature space (see the module docstring)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(FEATURE_SEED)
        self.convs = nn.ModuleList()
        for cin, cout in ((3, 64), (64, 128), (128, 256)):
            conv = nn.Conv2d(cin, cout, 3, padding=1, bias=True)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / (cin * 9)) ** 0.5)
                conv.bias.copy_(torch.randn(cout, generator=g) * 0.1)
            self.convs.append(conv)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [F.avg_pool2d(x, 8).flatten(1)]
        h = x
        for i, conv in enumerate(self.convs):
            if i > 0:
                h = F.avg_pool2d(h, 2)
            h = F.relu(conv(h))
            feats.append(h.mean(dim=(2, 3)))
        return torch.cat(feats, dim=1)


_NET: RandomFeatures | None = None
_NORM: tuple[np.ndarray, np.ndarray] | None = None


def raw_features(x: np.ndarray, batch: int = 500) -> np.ndarray:
    """float [N,3,32,32] in [-1,1] (clipped) -> float64 [N,496], unstandardised."""
    global _NET
    if _NET is None:
        _NET = RandomFeatures().eval()
    out = []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(np.clip(np.asarray(x[i:i + batch], dtype=np.float32), -1, 1))
        out.append(_NET(xb).double().numpy())
    return np.concatenate(out)


def features(x: np.ndarray, train_u8: np.ndarray) -> np.ndarray:
    """Standardised features; the standardisation comes from the first 5,000 training images."""
    global _NORM
    if _NORM is None:
        f = raw_features(landscapes.to_model(train_u8[:N_STATS]))
        std = f.std(0)
        for block in BLOCKS:  # floor: a nearly dead ReLU unit must not turn into a huge z-score
            std[block] = np.maximum(std[block], STD_FLOOR * np.median(std[block]))
        _NORM = (f.mean(0), std)
    return (raw_features(x) - _NORM[0]) / _NORM[1]


def frechet(fa: np.ndarray, fb: np.ndarray) -> float:
    from scipy import linalg
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    ca, cb = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    covmean, _ = linalg.sqrtm(ca @ cb, disp=False)
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(covmean))


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = torch.tensor(k / k.sum(), dtype=torch.float32)
    t = torch.from_numpy(x)
    c = t.shape[1]
    t = F.conv2d(F.pad(t, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    t = F.conv2d(F.pad(t, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return t.numpy()


def _patch_shuffle(x: np.ndarray, p: int, rng) -> np.ndarray:
    n, c, h, w = x.shape
    g = h // p
    tiles = x.reshape(n, c, g, p, g, p).transpose(0, 2, 4, 1, 3, 5).reshape(n, g * g, c, p, p)
    out = np.stack([tiles[i, rng.permutation(g * g)] for i in range(n)])
    return out.reshape(n, g, g, c, p, p).transpose(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


def fd_sanity(root: Path, log: Callable[[str], None] = print, out: Path | None = None) -> dict:
    """FD of the held-out set (2,000 images, set seed 1) against degraded copies and the
    training set; written to models/report/fd-sanity.json."""
    train = make_images.images(0, make_images.N_TRAIN)
    held = landscapes.to_model(make_images.images(1, make_images.N_HELDOUT))
    ref = features(held, train)
    rng = np.random.default_rng(0)
    base = landscapes.to_model(train[-N_FD:])      # training images not used for the statistics
    cases = {
        "training set (2,000 images)": base,
        "noise std 0.05": base + rng.normal(0, 0.05, base.shape).astype(np.float32),
        "noise std 0.15": base + rng.normal(0, 0.15, base.shape).astype(np.float32),
        "noise std 0.3": base + rng.normal(0, 0.3, base.shape).astype(np.float32),
        "blur sigma 0.5 px": _blur(base, 0.5),
        "blur sigma 1 px": _blur(base, 1.0),
        "blur sigma 2 px": _blur(base, 2.0),
        "8x8 patches shuffled": _patch_shuffle(base, 8, rng),
        "16x16 patches shuffled": _patch_shuffle(base, 16, rng),
        "200 distinct images x 10 (mode collapse)": np.repeat(base[:200], 10, axis=0),
        "brightness -10%": (base + 1) * 0.9 - 1,
    }
    res = {}
    for name, x in cases.items():
        res[name] = frechet(features(x, train), ref)
        log(f"FD held-out vs {name}: {res[name]:.3f}")
    if out is None:
        out = make_images.REPORT / "fd-sanity.json"
    make_images.atomic_write_json(out, {"feature_space": "image_eval.py (LFD, 496 dims)",
                                        "reference": "2,000 held-out images (set seed 1)", "fd": res})
    return res


def plot_gate(w: np.ndarray, path: Path, title: str) -> None:
    """PNG of the gate weights (global, local) against the timestep."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=120)
    ax.plot(w[:, 0], label="w_global")
    ax.plot(w[:, 1], label="w_local")
    ax.set_xlabel("timestep t (999 = pure noise)")
    ax.set_ylabel("gate weight")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    make_images.atomic_write_bytes(path, buf.getvalue())


def evaluate_run(root: Path, arch: str, seed: int, partial: bool = False,
                 log: Callable[[str], None] = print) -> dict:
    """Samples (2,000 per sampler), FD against the held-out set, grids, gate CSV -> result.json."""
    import image_diffusion
    run_dir = root / f"{make_images.DATASET}-{arch}-seed{seed}"
    model, steps_done = image_diffusion.load_ema(run_dir, arch, partial_ok=partial)
    suffix = "" if not partial else f"-partial{steps_done}"
    result_path = run_dir / f"result{suffix}.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    samplers = _samplers(model)
    if all(name in result.get("fd", {}) for name in samplers):
        return result
    schedule = image_diffusion.CosineSchedule()
    train = make_images.images(0, make_images.N_TRAIN)
    ref = features(landscapes.to_model(make_images.images(1, make_images.N_HELDOUT)), train)
    gen = torch.Generator().manual_seed(10_000 + seed)
    x_T = torch.randn(N_FD, 3, 32, 32, generator=gen)
    result = {"dataset": make_images.DATASET, "arch": arch, "seed": seed, "steps_trained": steps_done, "fd": {},
              "sample_wall_s": {}, **result}
    for name, fn in samplers.items():
        if name in result["fd"]:
            continue
        t0 = time.perf_counter()
        x = fn(schedule, x_T, gen)
        result["sample_wall_s"][name] = time.perf_counter() - t0
        if not np.all(np.isfinite(x)):
            raise RuntimeError(f"{run_dir.name}: non-finite samples ({name})")
        result["fd"][name] = frechet(features(x, train), ref)
        u8 = landscapes.from_model(x)
        make_images.atomic_save_npy(run_dir / f"samples-{name}{suffix}.npy", u8)
        landscapes.write_grid(make_images.REPORT / f"landscape-{arch}-seed{seed}-{name}{suffix}.png",
                              u8[:64], cols=8, scale=3)
        log(f"{run_dir.name}{suffix} {name}: FD {result['fd'][name]:.3f} ({result['sample_wall_s'][name]:.0f}s)")
        make_images.atomic_write_json(result_path, result)   # a killed evaluation keeps what it finished
    if arch == "dualscale":
        w = image_diffusion.gate_per_timestep(model, schedule)
        lines = ["t,w_global,w_local"] + [f"{t},{w[t, 0]:.8f},{w[t, 1]:.8f}" for t in range(len(w))]
        make_images.atomic_write_bytes(make_images.REPORT / f"gates-{make_images.DATASET}-seed{seed}{suffix}.csv",
                                       ("\n".join(lines) + "\n").encode())
        result["gate_global_t0"], result["gate_global_t999"] = float(w[0, 0]), float(w[-1, 0])
        plot_gate(w, make_images.REPORT / f"gates-{make_images.DATASET}-seed{seed}{suffix}.png",
                  f"{run_dir.name}{suffix} ({steps_done} steps)")
    make_images.atomic_write_json(result_path, result)
    return result


# the runtime's few-step samplers at 5 / 10 / 20 NFE (models/report/IMAGE-SAMPLERS-DRAFT.md): the
# best lists found for the shipped seed-0 model; the 10-step one is the manifest's `sampler` block
FEWSTEP_SPECS = {"unipc-5": "unipc:lamx-990-50:5",
                 "unipc-10": "unipc:{}:10".format(",".join(map(str, make_images.SAMPLER["dualscale"]["timesteps"]))),
                 "unipc-20": "unipc:karras7-80:20"}


def _samplers(model) -> dict:
    """name -> fn(schedule, x_T, gen) -> samples [N,3,32,32] (numpy), in evaluation order."""
    import image_diffusion
    import image_samplers
    out = {"ddpm-100": lambda sch, x_T, gen: image_diffusion.sample_ddpm(model, sch, x_T, gen, steps=100).numpy()}
    for k in (5, 10, 20):
        out[f"ddim-{k}"] = (lambda sch, x_T, gen, k=k: image_diffusion.sample_ddim(model, sch, x_T, steps=k).numpy())
    for name, spec in FEWSTEP_SPECS.items():
        def run(sch, x_T, gen, spec=spec):
            fn, ts, _ = image_samplers.parse(spec)
            return fn(image_samplers.TorchModel(model), ts, x_T.numpy(), gen)
        out[name] = run
    return out
