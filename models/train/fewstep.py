#!/usr/bin/env python
"""Few-step dual-scale models (issue 10): distillation of the shipped models, retraining on a
zero-terminal-SNR schedule, their samplers, and the KL measurements at 1, 2, 4, 8 NFE.

    nice -n 15 python models/train/fewstep.py teacher-eval --datasets dino   # shipped model + solvers/lists
    nice -n 15 python models/train/fewstep.py pdt --datasets dino --pd-start 32 --pd-end 1 --pd-steps 2500
                                                   # progressive distillation of the shipped model
    nice -n 15 python models/train/fewstep.py td --datasets dino --ns 8 4 --steps 2000 --pd-lr 2e-4 --base 32
                                                   # direct (TRACT-like) distillation, one student per n
    nice -n 15 python models/train/fewstep.py tdc --datasets dino --grid 99 30 11 4 --sub-steps 8 --cache 524288 \
        --steps 15000 --batch 256 --pd-lr 2e-4      # direct distillation from the teacher-plus run, cached
                                                   # targets, explicit student list (models/fewstep/*-td4)
    nice -n 15 python models/train/fewstep.py export-tdc --datasets dino --grid 99 30 11 4 [--weights ema|raw]
    nice -n 15 python models/train/fewstep.py dm --datasets circle --grid 99 59 31 15 7 3 1 0 --steps 400 \
        --pd-lr 5e-5 --dm-batch 1024 --dm-data-batch 4096 --reg-weight 1 --batch 256 --cache 131072
                                                   # distribution-matching fine-tune of a tdc student
                                                   # through its own DDIM chain (MMD to fresh data)
    nice -n 15 python models/train/fewstep.py eval-dm --datasets circle --grid 99 59 31 15 7 3 1 0 [--weights ema]
    nice -n 15 python models/train/fewstep.py export-dm --datasets circle --grid 99 59 31 15 7 3 1 0 [--ship]
    nice -n 15 python models/train/fewstep.py base --datasets dino            # cosine-ZTSNR v-prediction retrain
    nice -n 15 python models/train/fewstep.py pd --datasets dino --rho 1      # PD of that v-model (not run yet)
    nice -n 15 python models/train/fewstep.py cd --datasets dino --pd-start 32 --steps N   # consistency distillation
    nice -n 15 python models/train/fewstep.py teacher-plus --datasets dino --steps 4000 --pd-lr 1e-4 --batch 512
                                                   # fine-tune the shipped teacher with the recipe's loss
    nice -n 15 python models/train/fewstep.py eval --datasets dino            # KL rows of every finished run
    python models/train/fewstep.py report                                    # -> models/report/fewstep.json

Every training stage is resumable (checkpoints every 500 steps under models/train/runs/fewstep/,
finished runs skipped) and deterministic by seed (same conventions as diffusion.py: one thread,
draws from generators seeded by (seed, step) / (seed, epoch)). Results and reading:
models/report/FEWSTEP-DRAFT.md.

Distilled students (pdt, td, cd) keep the shipped model's inputs, outputs (eps, gate), schedule
(T = 100 linear betas) and integer timesteps; they are run by DDIM (eta 0) on a fixed list of
timesteps, `teacher_grid(n)`, that the manifest must carry (see `sample_ddim`, `export_pdt`).

The `base` models instead use the cosine schedule with zero terminal SNR

    alpha(t) = cos(pi/2 * (t + 1) / 100),  sigma(t) = sin(pi/2 * (t + 1) / 100),  t in [-1, 99]

(t = 99: pure noise; t = -1: clean data, never fed to the network) and predict
v = alpha * eps - sigma * x0: x0 = alpha * x - sigma * v, eps = sigma * x + alpha * v.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR

sys.path.insert(0, str(Path(__file__).resolve().parent))
import atomic  # noqa: E402
import datasets  # noqa: E402
import diffusion  # noqa: E402
import kl  # noqa: E402
import nets  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
RUNS = MODELS / "train" / "runs" / "fewstep"
REPORT_JSON = MODELS / "report" / "fewstep.json"
N_SAMPLES = 10_000
K = 5
T_MAX = 99.0  # largest model time (pure noise for the cosine schedule)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- schedules

class CosineZTSNR:
    """alpha(t) = cos(pi/2 (t+1)/100), sigma(t) = sin(pi/2 (t+1)/100), float64; t = -1 is clean."""

    name = "cosine_ztsnr"

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        if t <= -1.0:
            return 1.0, 0.0
        a = math.pi / 2 * (t + 1.0) / 100.0
        return math.cos(a), math.sin(a)

    def manifest(self) -> dict:
        return {"type": "cosine_ztsnr", "formula": "alpha=cos(pi/2*(t+1)/100), sigma=sin(pi/2*(t+1)/100)",
                "t_min": -1, "t_max": 99}

    def t_of_u(self, u: float) -> float:
        """u in [0,1] (fraction of the way to pure noise) -> model time."""
        return 100.0 * u - 1.0


class TeacherDiscrete:
    """The shipped models' schedule: T=100 linear betas, abar at integer t (float32 values as the
    recipe computes them, used in float64); t = -1 is clean."""

    name = "ddpm_linear_100"

    def __init__(self):
        self.abar = diffusion.Schedule().alphas_cumprod.numpy().astype(np.float64)

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        if t <= -1.0:
            return 1.0, 0.0
        ti = int(round(t))
        if abs(ti - t) > 1e-9:
            raise ValueError(f"the teacher's schedule is discrete; t={t}")
        ab = self.abar[ti]
        return math.sqrt(ab), math.sqrt(1.0 - ab)


# ---------------------------------------------------------------- denoiser wrapper

class Denoiser:
    """(x0_hat, eps_hat) from a network for a schedule and a prediction type, in float32. grad:
    keep the autograd graph (the `dm` stage trains through a whole sampler run)."""

    def __init__(self, model: nn.Module, schedule, prediction: str, grad: bool = False):
        self.model, self.schedule, self.prediction, self.grad = model, schedule, prediction, grad
        self.nfe = 0

    def __call__(self, x: torch.Tensor, t: float):
        with torch.set_grad_enabled(self.grad):
            return self._predict(x, t)

    def _predict(self, x: torch.Tensor, t: float):
        a, s = self.schedule.alpha_sigma(t)
        out = nets.eps_of(self.model, x, torch.full((x.shape[0],), float(t), dtype=torch.float32))
        self.nfe += 1
        if self.prediction == "epsilon":
            eps = out
            x0 = (x - s * eps) / a
        elif self.prediction == "v":
            x0 = a * x - s * out
            eps = s * x + a * out
        elif self.prediction == "x0":
            x0 = out
            eps = (x - a * x0) / s
        else:
            raise ValueError(self.prediction)
        return x0, eps


# ---------------------------------------------------------------- samplers (what the runtime ports)

def sample_ddim(den: Denoiser, x: torch.Tensor, ts: list[float]) -> torch.Tensor:
    """Deterministic DDIM over the model times ts (descending), then to clean data.

    for i, t in enumerate(ts):                     # one network evaluation per entry
        x0, eps = den(x, t)
        if i == last: x = x0
        else:         x = alpha(ts[i+1]) * x0 + sigma(ts[i+1]) * eps
    """
    for i, t in enumerate(ts):
        x0, eps = den(x, t)
        if i == len(ts) - 1:
            x = x0
        else:
            a, s = den.schedule.alpha_sigma(ts[i + 1])
            x = a * x0 + s * eps
    return x


def sample_dpmpp2m(den: Denoiser, x: torch.Tensor, ts: list[float]) -> torch.Tensor:
    """DPM-Solver++(2M) that also accepts alpha(ts[0]) = 0: its first step is a DDIM step."""
    sch = den.schedule
    prev_x0, prev_lam, prev_h = None, None, None
    for i, t in enumerate(ts):
        x0, eps = den(x, t)
        if i == len(ts) - 1:
            return x0
        a_s, s_s = sch.alpha_sigma(t)
        a_t, s_t = sch.alpha_sigma(ts[i + 1])
        lam_t = math.log(a_t) - math.log(s_t)
        if a_s <= 0.0:  # lambda = -inf: exact first-order step is DDIM
            x = a_t * x0 + s_t * eps
            prev_x0, prev_lam = x0, None
            continue
        lam_s = math.log(a_s) - math.log(s_s)
        h = lam_t - lam_s
        if prev_x0 is None or prev_lam is None:
            d = x0
        else:
            r = (lam_s - prev_lam) / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev_x0
        x = (s_t / s_s) * x + a_t * (-math.expm1(-h)) * d
        prev_x0, prev_lam = x0, lam_s
    return x


def sample_dpmpp3m(den: Denoiser, x: torch.Tensor, ts: list[float]) -> torch.Tensor:
    """DPM-Solver++(3M) (data prediction) as the runtime runs it (src/sampler/dpm_solver.rs, after
    diffusers' DPMSolverMultistepScheduler): order 1 at the first step and at the last (to clean
    data), at most the number of x0 predictions so far, and order 2 at the second-to-last step
    when there are fewer than 15 steps. Needs alpha(ts[0]) > 0."""
    sch = den.schedule
    levels = [sch.alpha_sigma(t) for t in ts] + [(1.0, 0.0)]

    def lam(k: int) -> float:
        a, s = levels[k]
        return math.inf if s == 0.0 else math.log(a) - math.log(s)

    ms: list[torch.Tensor] = []  # x0 predictions, newest first
    n = len(ts)
    for i, t in enumerate(ts):
        x0, _ = den(x, t)
        ms = [x0] + ms[:2]
        if i == n - 1:
            return x0
        order = 2 if (i == n - 2 and n < 15) else 3
        order = min(order, len(ms))
        (a_s, s_s), (a_t, s_t) = levels[i], levels[i + 1]
        h = lam(i + 1) - lam(i)
        phi = math.expm1(-h)
        x_next = (s_t / s_s) * x - a_t * phi * ms[0]
        if order == 2:
            r0 = (lam(i) - lam(i - 1)) / h
            x_next = x_next - 0.5 * a_t * phi * (ms[0] - ms[1]) / r0
        elif order == 3:
            r0, r1 = (lam(i) - lam(i - 1)) / h, (lam(i - 1) - lam(i - 2)) / h
            d1_0, d1_1 = (ms[0] - ms[1]) / r0, (ms[1] - ms[2]) / r1
            d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x_next = x_next + a_t * (phi / h + 1.0) * d1 - a_t * ((phi + h) / (h * h) - 0.5) * d2
        x = x_next
    return x


def sample_ancestral(den: Denoiser, x: torch.Tensor, ts: list[float], gen: torch.Generator,
                     eta: float = 1.0) -> torch.Tensor:
    """DDIM(eta) over ts (eta=1: DDPM posterior with beta-tilde variance), no noise into clean."""
    for i, t in enumerate(ts):
        x0, eps = den(x, t)
        if i == len(ts) - 1:
            return x0
        a_s, s_s = den.schedule.alpha_sigma(t)
        a_t, s_t = den.schedule.alpha_sigma(ts[i + 1])
        ab_s, ab_t = a_s * a_s, a_t * a_t
        var = eta ** 2 * (1 - ab_t) / (1 - ab_s) * (1 - ab_s / ab_t)
        sd = math.sqrt(max(var, 0.0))
        x = a_t * x0 + math.sqrt(max(1 - ab_t - var, 0.0)) * eps
        x = x + sd * torch.randn(x.shape, generator=gen)
    return x


SAMPLERS = {"ddim": sample_ddim, "dpmpp2m": sample_dpmpp2m}


# ---------------------------------------------------------------- timestep lists

def teacher_list(n: int, kind: str) -> list[float]:
    """n integer model times for the discrete teacher (descending, starting at 99)."""
    T = 100
    if kind == "trailing":
        ts = np.round(np.arange(T, 0, -T / n)).astype(int) - 1
    elif kind == "linspace":
        ts = np.round(np.linspace(0, T - 1, n + 1)[::-1][:-1]).astype(int) if n > 1 else np.array([99])
    elif kind == "logsnr":  # uniform in lambda from t=99 to t=0, n points, last one is t=0
        sch = TeacherDiscrete()
        lam = np.log(sch.abar) / 2 - np.log(1 - sch.abar) / 2
        targets = np.linspace(lam[99], lam[0], n) if n > 1 else np.array([lam[99]])
        ts = np.array([int(np.argmin(np.abs(lam - v))) for v in targets])
    else:
        raise ValueError(kind)
    return [float(t) for t in ts]


def teacher_grid(n: int, base: int = 64, rho: float = 1.5) -> list[float]:
    """Nested integer grids for distilling the discrete teacher: G_base has `base` distinct integer
    model times t_j ~ 99 (1 - j/base)^rho (j = 0..base-1, forced strictly decreasing, last = 0);
    G_n = G_base[::base/n] (so G_1 = [99]). A sampler evaluates the model at G_n and the last
    step goes to clean data."""
    raw = [99.0 * (1.0 - j / base) ** rho for j in range(base)]
    ts = [int(round(v)) for v in raw]
    ts[-1] = 0
    for j in range(base - 2, -1, -1):  # strictly decreasing from the bottom up
        ts[j] = max(ts[j], ts[j + 1] + 1)
    if ts[0] != 99:
        raise ValueError(ts)
    return [float(t) for t in ts[::base // n]]


def warp_list(n: int, rho: float = 1.0, sch=None) -> list[float]:
    """n model times for the cosine schedule: u_i = (i/n)^rho, i = n..1 (u = 1 is pure noise).

    The network is evaluated at u = 1, ((n-1)/n)^rho, ..., (1/n)^rho and the last step goes to
    clean data (u = 0). rho > 1 puts more steps at low noise."""
    sch = sch or CosineZTSNR()
    return [sch.t_of_u((i / n) ** rho) for i in range(n, 0, -1)]


# ---------------------------------------------------------------- evaluation

_DATA: dict[str, np.ndarray] = {}
_RHO: dict[str, np.ndarray] = {}


def data_of(ds: str) -> np.ndarray:
    if ds not in _DATA:
        arr = np.load(MODELS / "data" / f"{ds}.npy")
        _DATA[ds] = arr
        _RHO[ds] = kl.rho_k(arr, K)
    return _DATA[ds]


def kl_of(ds: str, x: np.ndarray) -> float:
    if not np.all(np.isfinite(x)):
        return float("nan")
    return kl.kl_bits(data_of(ds), x, K, rho=_RHO[ds])


def start_noise(seed: int, n: int = N_SAMPLES) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(10_000 + seed))


def moment_start(ds: str, abar: float, z: torch.Tensor) -> torch.Tensor:
    st = datasets.stats(data_of(ds))
    mean = np.sqrt(abar) * np.asarray(st["mean"])
    cov = abar * np.asarray(st["cov"]) + (1 - abar) * np.eye(2)
    x = mean + z.numpy().astype(np.float64) @ np.linalg.cholesky(cov).T
    return torch.from_numpy(x.astype(np.float32))


# ---------------------------------------------------------------- teacher (shipped ONNX -> nets)

def load_shipped(ds: str, arch: str = "dualscale", path: Path | None = None) -> nn.Module:
    """The shipped model's weights (ONNX initializers of `path`, default models/{ds}-{arch}.onnx)
    loaded into nets.build(arch), checked against the file by onnx_export.verify (onnxruntime and
    tract, max abs diff <= 1e-5 at every timestep)."""
    import onnx
    from onnx import numpy_helper

    import onnx_export

    path = path or MODELS / f"{ds}-{arch}.onnx"
    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    model = nets.build(arch)
    sd = model.state_dict()
    new = {}
    for k, v in sd.items():
        if k in inits and tuple(inits[k].shape) == tuple(v.shape):
            new[k] = torch.from_numpy(inits[k].copy())
    for k in [k for k in sd if k.endswith("network.0.weight") and k not in new]:
        branch = k[: -len(".network.0.weight")]  # onnx_export.SharedTimestep's split first layer
        if f"{branch}.w_x_T" in inits and f"{branch}.w_t_T" in inits:
            new[k] = torch.from_numpy(np.concatenate([inits[f"{branch}.w_x_T"].T, inits[f"{branch}.w_t_T"].T], axis=1).copy())
    missing = [k for k in sd if k not in new]
    if missing:
        # MatMul-exported Linear weights are stored transposed under generated names: match by
        # the Gemm/MatMul node that consumes them is brittle, so fail loudly instead.
        raise RuntimeError(f"{path}: no initializer for {missing[:5]} ... ({len(missing)} missing)")
    model.load_state_dict(new)
    model.eval()
    if proto.graph.input[1].type.tensor_type.shape.dim[0].dim_param:
        _check_per_sample_t(model, path)  # an export from before one timestep per call
    else:
        onnx_export.verify(model, arch, path)
    return model


@torch.no_grad()
def _check_per_sample_t(model: nn.Module, path: Path, tol: float = 1e-5) -> None:
    """PyTorch vs onnxruntime on a file whose `t` is [N] (one timestep per sample)."""
    import onnxruntime as ort

    t = torch.arange(100, dtype=torch.float32).repeat_interleave(100)
    x = torch.randn(len(t), 2, generator=torch.Generator().manual_seed(0)) * 2.5
    ref = model(x, t)
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy(), "t": t.numpy()})
    diffs = [float(np.max(np.abs(g - r.numpy()))) for g, r in zip(got, ref)]
    if len(got) != len(ref) or max(diffs) > tol:
        raise RuntimeError(f"{path}: PyTorch vs onnxruntime {diffs}")


# ---------------------------------------------------------------- training (resumable)

@dataclass(frozen=True)
class FewCfg:
    method: str = "v"            # "v": data training on CosineZTSNR; "pd": one distillation round
    steps: int = 10_000
    batch_size: int = 256
    lr: float = 3e-4
    ema_decay: float = 0.995
    ema_every: int = 10
    grad_clip: float = 0.5
    ema_update_after_step: int = 100
    ema_inv_gamma: float = 1.0
    ema_power: float = 2 / 3
    ckpt_every: int = 500
    pd_student_steps: int = 0    # pd: the student's number of steps (teacher takes twice as many)
    rho: float = 1.0             # pd: grid u_i = (i/n)^rho
    init: str = "scratch"        # "scratch", or the run directory name whose ema.pt starts the model
    grid_base: int = 64          # pdt: nested integer grids teacher_grid(n, grid_base, grid_rho)
    grid_rho: float = 1.5
    teacher_solver: str = "ddim"  # pdt: the teacher's two evaluations per student step: "ddim" or "2s"
    grid: tuple = ()             # tdc: the student's explicit integer timestep list (descending, grid[0] = 99)
    sub_steps: int = 0           # tdc: teacher DPM-Solver++(2M) steps per student interval
    cache: int = 0               # tdc: number of cached (z, t, target) triples
    teacher: str = ""            # tdc: teacher run directory name under RUNS ("" = the shipped model)
    dataset: str = ""            # dm: the dataset whose generator gives the fresh data draws
    dm_batch: int = 0            # dm: student samples per step (8-step DDIM chain from the data-moment start)
    dm_data_batch: int = 0       # dm: fresh data points per step
    dm_bandwidths: tuple = ()    # dm: Gaussian kernel bandwidths of the MMD
    reg_weight: float = 0.0      # dm: weight of the cached-target distillation loss (the regulariser)
    dm_divergence: str = "mmd"   # dm: "mmd" (mmd2) or "knn" (knn_kl: the k-NN estimate of KL(data || samples))


def _same_cfg(saved: dict, cfg: FewCfg) -> bool:
    """A checkpoint's config equals cfg; fields added to FewCfg after the checkpoint was written
    match when cfg has them at their defaults."""
    now, defaults = asdict(cfg), asdict(FewCfg())
    return set(saved) <= set(now) and all(saved.get(k, defaults[k]) == v for k, v in now.items())


def _teacher_two_steps(teacher: nn.Module, z: torch.Tensor, t: torch.Tensor, tm: torch.Tensor,
                       tn: torch.Tensor, sch: CosineZTSNR) -> torch.Tensor:
    """Two per-sample DDIM steps of a v-model t -> tm -> tn (tn may be -1 = clean); returns z_tn."""
    def ab(tt):
        a = torch.pi / 2 * (tt.to(torch.float64) + 1) / 100
        return torch.cos(a).to(torch.float32).unsqueeze(1), torch.sin(a).to(torch.float32).unsqueeze(1)
    with torch.no_grad():
        x = z
        for t0, t1 in ((t, tm), (tm, tn)):
            a0, s0 = ab(t0)
            v = nets.eps_of(teacher, x, t0)
            x0 = a0 * x - s0 * v
            eps = s0 * x + a0 * v
            a1, s1 = ab(t1)
            a1 = torch.where(t1.unsqueeze(1) <= -1, torch.ones_like(a1), a1)
            s1 = torch.where(t1.unsqueeze(1) <= -1, torch.zeros_like(s1), s1)
            x = a1 * x0 + s1 * eps
    return x


_PDT_TABLES: dict = {}


def _pdt_tables(cfg: "FewCfg"):
    """Per student step j: (t, t_mid, t_next) model times and their alpha, sigma (float64 -> f32)."""
    key = (cfg.pd_student_steps, cfg.grid_base, cfg.grid_rho)
    if key not in _PDT_TABLES:
        n = cfg.pd_student_steps
        g2 = teacher_grid(2 * n, cfg.grid_base, cfg.grid_rho) if 2 * n <= cfg.grid_base else None
        if g2 is None:
            raise ValueError(f"grid_base {cfg.grid_base} cannot teach a {n}-step student")
        sch = TeacherDiscrete()
        rows = []
        for j in range(n):
            t, tm = g2[2 * j], g2[2 * j + 1]
            tn = g2[2 * j + 2] if 2 * j + 2 < len(g2) else -1.0
            rows.append([t, tm, tn, *sch.alpha_sigma(t), *sch.alpha_sigma(tm), *sch.alpha_sigma(tn)])
        _PDT_TABLES[key] = torch.tensor(rows, dtype=torch.float64)
    return _PDT_TABLES[key]


def _pdt_loss(model, teacher, batch, noise, g, cfg) -> torch.Tensor:
    """Progressive distillation on the shipped (discrete, epsilon) teacher's schedule.

    Student step j goes G_n[j] -> G_n[j+1] (or clean); the teacher takes two steps through the
    finer grid's midpoint (DDIM, or DPM-Solver++(2S) for the first round). The student is trained
    so that one DDIM step with its prediction lands where the teacher's two steps land."""
    tab = _pdt_tables(cfg)
    j = torch.randint(0, cfg.pd_student_steps, (batch.shape[0],), generator=g)
    r = tab[j]
    col = lambda c: r[:, c].to(torch.float32).unsqueeze(1)  # noqa: E731
    t, tm, tn = r[:, 0].to(torch.float32), r[:, 1].to(torch.float32), r[:, 2]
    a, s, am, sm, an, sn = col(3), col(4), col(5), col(6), col(7), col(8)
    z = a * batch + s * noise
    with torch.no_grad():
        e1 = nets.eps_of(teacher, z, t)
        x0_1 = (z - s * e1) / a
        if cfg.teacher_solver == "ddim":
            zm = am * x0_1 + sm * e1
        else:  # DPM-Solver++ first-order substep to t_mid (identical to DDIM)
            zm = am * x0_1 + sm * e1
        e2 = nets.eps_of(teacher, zm, tm)
        x0_2 = (zm - sm * e2) / am
        if cfg.teacher_solver == "2s":
            lam = lambda aa, ss: torch.log(aa) - torch.log(ss)  # noqa: E731
            lam_s, lam_m = lam(r[:, 3], r[:, 4]), lam(r[:, 5], r[:, 6])
            clean = tn < -0.5
            lam_n = torch.where(clean, lam_m + 1.0, lam(r[:, 7], r[:, 8].clamp_min(1e-300)))
            h = lam_n - lam_s
            rr = (lam_m - lam_s) / h
            w = (1.0 / (2.0 * rr)).to(torch.float32).unsqueeze(1)
            d = (1 - w) * x0_1 + w * x0_2
            em = (-torch.expm1(-h)).to(torch.float32).unsqueeze(1)
            z2 = (sn / s) * z + an * em * d
            z2 = torch.where(clean.unsqueeze(1), x0_2, z2)
        else:
            z2 = an * x0_2 + sn * e2
        ratio = sn / s
        x_tilde = (z2 - ratio * z) / (an - ratio * a)
        eps_tilde = (z - a * x_tilde) / s
    return ((nets.eps_of(model, z, t) - eps_tilde) ** 2).mean()


def _teacher_2s(teacher, z, r) -> torch.Tensor:
    """The shipped (epsilon) teacher's DPM-Solver++(2S) step from r[:,0] through r[:,1] to r[:,2]
    (rows of _pdt_tables; t_next = -1 is clean data, reached by DDIM through the midpoint)."""
    col = lambda c: r[:, c].to(torch.float32).unsqueeze(1)  # noqa: E731
    t, tm, tn = r[:, 0].to(torch.float32), r[:, 1].to(torch.float32), r[:, 2]
    a, s, am, sm, an, sn = col(3), col(4), col(5), col(6), col(7), col(8)
    e1 = nets.eps_of(teacher, z, t)
    x0_1 = (z - s * e1) / a
    zm = am * x0_1 + sm * e1
    e2 = nets.eps_of(teacher, zm, tm)
    x0_2 = (zm - sm * e2) / am
    lam = lambda aa, ss: torch.log(aa) - torch.log(ss)  # noqa: E731
    lam_s, lam_m = lam(r[:, 3], r[:, 4]), lam(r[:, 5], r[:, 6])
    clean = tn < -0.5
    lam_n = torch.where(clean, lam_m + 1.0, lam(r[:, 7], r[:, 8].clamp_min(1e-300)))
    h = lam_n - lam_s
    w = (h / (2.0 * (lam_m - lam_s))).to(torch.float32).unsqueeze(1)
    d = (1 - w) * x0_1 + w * x0_2
    em = (-torch.expm1(-h)).to(torch.float32).unsqueeze(1)
    z2 = (sn / s) * z + an * em * d
    return torch.where(clean.unsqueeze(1), x0_2, z2)


def _cd_loss(model, teacher, batch, noise, g, cfg) -> torch.Tensor:
    """Consistency distillation on the shipped teacher's grid G_n (n = cfg.pd_student_steps
    intervals, teacher DPM-Solver++(2S) through the G_2n midpoint). f(x, t) = x0 from the epsilon
    output; the target is stop-grad f at the teacher's landing point (teacher's x0 on the last
    interval, which ends at clean data). Plain squared error on x0."""
    tab = _pdt_tables(cfg)
    j = torch.randint(0, cfg.pd_student_steps, (batch.shape[0],), generator=g)
    r = tab[j]
    a = r[:, 3].to(torch.float32).unsqueeze(1)
    s = r[:, 4].to(torch.float32).unsqueeze(1)
    t = r[:, 0].to(torch.float32)
    z = a * batch + s * noise
    with torch.no_grad():
        z2 = _teacher_2s(teacher, z, r)
        tn = r[:, 2]
        clean = (tn < -0.5).unsqueeze(1)
        an = r[:, 7].to(torch.float32).unsqueeze(1)
        sn = r[:, 8].to(torch.float32).unsqueeze(1)
        was = model.training
        model.eval()
        e_next = nets.eps_of(model, z2, tn.clamp_min(0).to(torch.float32))
        model.train(was)
        target = torch.where(clean, z2, (z2 - sn * e_next) / torch.where(clean, torch.ones_like(an), an))
    f = (z - s * nets.eps_of(model, z, t)) / a
    return ((f - target) ** 2).mean()


def sample_consistency(den: Denoiser, x: torch.Tensor, ts: list[float], gen: torch.Generator) -> torch.Tensor:
    """Consistency-model multistep sampling: x0 = f(x, ts[0]); for t in ts[1:]: re-noise x0 to t
    with fresh N(0, I) noise, x0 = f(x, t)."""
    x0, _ = den(x, ts[0])
    for t in ts[1:]:
        a, s = den.schedule.alpha_sigma(t)
        x = a * x0 + s * torch.randn(x0.shape, generator=gen)
        x0, _ = den(x, t)
    return x0


_TD_TABLES: dict = {}


def _td_tables(n: int, base: int, rho: float) -> torch.Tensor:
    """[n, k+1, 3] (t, alpha, sigma) of the base grid points inside each student interval
    (k = base/n sub-steps; t = -1, alpha = 1, sigma = 0 is clean data)."""
    key = (n, base, rho)
    if key not in _TD_TABLES:
        g = teacher_grid(base, base, rho) + [-1.0]
        k = base // n
        sch = TeacherDiscrete()
        _TD_TABLES[key] = torch.tensor([[[g[j * k + m], *sch.alpha_sigma(g[j * k + m])] for m in range(k + 1)]
                                        for j in range(n)], dtype=torch.float64)
    return _TD_TABLES[key]


@torch.no_grad()
def teacher_solve(teacher, z: torch.Tensor, sub: torch.Tensor) -> torch.Tensor:
    """The shipped teacher's DPM-Solver++(2M) through per-sample sub-grids sub [B, k+1, 3]
    (t, alpha, sigma; float64), restarting the multistep history at sub[:,0]; a step into clean
    data returns x0_hat (first order)."""
    x, prev_x0, prev_h = z, None, None
    k = sub.shape[1] - 1
    f32 = lambda v: v.to(torch.float32).unsqueeze(1)  # noqa: E731
    for m in range(k):
        ta, aa, sa = sub[:, m, 0], sub[:, m, 1], sub[:, m, 2]
        tb, ab, sb = sub[:, m + 1, 0], sub[:, m + 1, 1], sub[:, m + 1, 2]
        eps = nets.eps_of(teacher, x, ta.to(torch.float32))
        x0 = (x - f32(sa) * eps) / f32(aa)
        clean = tb < -0.5
        lam_a = torch.log(aa) - torch.log(sa)
        lam_b = torch.log(ab) - torch.log(sb.clamp_min(1e-300))
        h = lam_b - lam_a
        if prev_x0 is None:
            d = x0
        else:
            w = f32(h / (2.0 * prev_h))  # 1/(2r), r = h_prev / h
            d = (1 + w) * x0 - w * prev_x0
        xn = f32(sb / sa) * x + f32(ab * (-torch.expm1(-h))) * d
        x = torch.where(clean.unsqueeze(1), x0, xn)
        prev_x0, prev_h = x0, h
    return x


def _td_loss(model, teacher, batch, noise, g, cfg) -> torch.Tensor:
    """Direct (one-phase, TRACT-like) time distillation: the n-step student's DDIM step over each
    interval of its grid must land where the teacher's DPM-Solver++(2M) over the base grid's
    points inside that interval lands. Epsilon-space loss, as in _pdt_loss."""
    tab = _td_tables(cfg.pd_student_steps, cfg.grid_base, cfg.grid_rho)
    j = torch.randint(0, cfg.pd_student_steps, (batch.shape[0],), generator=g)
    sub = tab[j]
    f32 = lambda v: v.to(torch.float32).unsqueeze(1)  # noqa: E731
    t, a, s = sub[:, 0, 0].to(torch.float32), f32(sub[:, 0, 1]), f32(sub[:, 0, 2])
    an, sn = f32(sub[:, -1, 1]), f32(sub[:, -1, 2])
    z = a * batch + s * noise
    with torch.no_grad():
        z2 = teacher_solve(teacher, z, sub)
        ratio = sn / s
        x_tilde = (z2 - ratio * z) / (an - ratio * a)
        eps_tilde = (z - a * x_tilde) / s
    return ((nets.eps_of(model, z, t) - eps_tilde) ** 2).mean()


def interval_subgrid(ta: int, tb: int, k: int) -> list[float]:
    """Integer teacher times for one student interval ta -> tb (tb = -1: clean data): at most k
    teacher steps, as uniform in log-SNR as the integers allow (an interval ending in clean data
    runs down to t = 0 and takes its last step from t = 0 into clean data)."""
    sch = TeacherDiscrete()
    lam = 0.5 * np.log(sch.abar / (1.0 - sch.abar))
    lo, m = (0, k) if tb < 0 else (tb, k + 1)
    targets = np.linspace(lam[ta], lam[lo], m) if m > 1 else np.array([lam[ta]])
    ts = sorted({int(np.argmin(np.abs(lam - v))) for v in targets} | {ta, lo}, reverse=True)
    return [float(t) for t in ts] + ([-1.0] if tb < 0 else [])


@torch.no_grad()
def tdc_targets(teacher: nn.Module, ds: str, seed: int, grid: list[int], k: int, count: int,
                chunk: int = 8192, data: np.ndarray | None = None) -> dict:
    """Cached targets for direct distillation on an explicit student list `grid`: `count` draws
    (x0 from the data, unit noise, interval j uniform), z = alpha x0 + sigma noise at grid[j], and
    the epsilon target eps~ such that one DDIM step grid[j] -> grid[j+1] (or clean) from z lands
    where the teacher's DPM-Solver++(2M) over interval_subgrid(grid[j], grid[j+1], k) lands
    (restarted per interval). Draws from generators seeded by (seed, 2, chunk). data: the x0 pool
    (default: models/data/{ds}.npy, the teacher's training set)."""
    data = torch.from_numpy(np.ascontiguousarray(data_of(ds) if data is None else data, dtype=np.float32))
    sch = TeacherDiscrete()
    nxt = list(grid[1:]) + [-1]
    subs = [torch.tensor([[t, *sch.alpha_sigma(t)] for t in interval_subgrid(int(ta), int(tb), k)],
                         dtype=torch.float64) for ta, tb in zip(grid, nxt)]
    zs, ts, es = [], [], []
    for c in range(-(-count // chunk)):
        g = diffusion._gen(seed, 2, c)
        b = min(chunk, count - c * chunk)
        x0 = data[torch.randint(0, data.shape[0], (b,), generator=g)]
        noise = torch.randn((b, 2), generator=g)
        j = torch.randint(0, len(grid), (b,), generator=g)
        z, t, e = torch.empty(b, 2), torch.empty(b), torch.empty(b, 2)
        for jj, sub in enumerate(subs):
            m = j == jj
            a, s = (float(v) for v in sub[0, 1:])
            an, sn = (float(v) for v in sub[-1, 1:])
            zj = a * x0[m] + s * noise[m]
            z2 = teacher_solve(teacher, zj, sub.expand(int(m.sum()), -1, -1))
            x_tilde = (z2 - (sn / s) * zj) / (an - (sn / s) * a)
            z[m], t[m], e[m] = zj, float(sub[0, 0]), (zj - a * x_tilde) / s
        zs.append(z), ts.append(t), es.append(e)
        log(f"tdc targets: {c * chunk + b}/{count}")
    return {"z": torch.cat(zs), "t": torch.cat(ts), "eps": torch.cat(es), "grid": list(grid), "sub_steps": k,
            "subgrids": [sub[:, 0].tolist() for sub in subs]}


_SCHED: list = []


def _tdc_loss(model, targets: dict, g: torch.Generator, batch: int) -> torch.Tensor:
    """Cached direct-distillation targets (tdc_targets): plain epsilon regression on `batch` of them."""
    idx = torch.randint(0, targets["t"].shape[0], (batch,), generator=g)
    return ((nets.eps_of(model, targets["z"][idx], targets["t"][idx]) - targets["eps"][idx]) ** 2).mean()


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _recipe_schedule() -> diffusion.Schedule:
    if not _SCHED:
        _SCHED.append(diffusion.Schedule())
    return _SCHED[0]


def train_run(run_dir: Path, seed: int, data: np.ndarray, cfg: FewCfg,
              init_state: dict | None = None, teacher: nn.Module | None = None,
              targets: dict | None = None) -> dict:
    """One resumable run; ckpt.pt every cfg.ckpt_every steps, ema.pt + train.json at the end.
    `targets` (methods "tdc", "dm"): the cached (z, t, eps) triples of tdc_targets. `data` may be
    None for method "dm" (its data are fresh draws, `fresh_data`)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    summary_path = run_dir / "train.json"
    if summary_path.exists() and (run_dir / "ema.pt").exists():
        return json.loads(summary_path.read_text())
    torch.manual_seed(seed)
    model = nets.build("dualscale")
    if init_state is not None:
        model.load_state_dict(init_state)
    ema = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    sched = CosineAnnealingLR(opt, T_max=cfg.steps)
    dcfg = diffusion.TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, ema_decay=cfg.ema_decay,
                                 ema_every=cfg.ema_every, grad_clip=cfg.grad_clip,
                                 ema_update_after_step=cfg.ema_update_after_step, ema_inv_gamma=cfg.ema_inv_gamma,
                                 ema_power=cfg.ema_power, ckpt_every=cfg.ckpt_every)
    step, wall, losses, resumed_from, parts = 0, 0.0, [], [], []
    ckpt_path = run_dir / "ckpt.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        if not _same_cfg(ck["config"], cfg) or ck["seed"] != seed:
            raise RuntimeError(f"{ckpt_path} was written with another config; delete {run_dir} to restart")
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        step, wall, losses, parts = ck["step"], ck["wall"], ck["losses"], ck.get("parts", [])
        resumed_from = ck.get("resumed_from", []) + [step]
        log(f"resuming {run_dir.name} at step {step}")

    sch = CosineZTSNR()
    x_all = None if data is None else torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    n = 0 if x_all is None else x_all.shape[0]
    per_epoch = max(-(-n // cfg.batch_size), 1)
    perm_epoch, perm = -1, None
    model.train()
    t0 = time.perf_counter()
    while step < cfg.steps:
        epoch, k = divmod(step, per_epoch)
        if x_all is not None and epoch != perm_epoch:
            perm, perm_epoch = torch.randperm(n, generator=diffusion._gen(seed, 1, epoch)), epoch
        batch = None if x_all is None else x_all[perm[k * cfg.batch_size:(k + 1) * cfg.batch_size]]
        g = diffusion._gen(seed, 0, step)
        noise = None if batch is None else torch.randn(batch.shape, generator=g)
        if cfg.method == "v":
            u = torch.rand(batch.shape[0], generator=g, dtype=torch.float64)  # [0,1): t in [-1, 99)
            u = 1.0 - u                                                       # (0, 1]: t in (-1, 99]
            t = (100.0 * u - 1.0).to(torch.float32)
            a = torch.cos(torch.pi / 2 * u).to(torch.float32).unsqueeze(1)
            s = torch.sin(torch.pi / 2 * u).to(torch.float32).unsqueeze(1)
            z = a * batch + s * noise
            target = a * noise - s * batch
            loss = ((nets.eps_of(model, z, t) - target) ** 2).mean()
        elif cfg.method == "pd":
            N = cfg.pd_student_steps
            i = torch.randint(1, N + 1, (batch.shape[0],), generator=g).to(torch.float64)
            u_of = lambda j: (j / N) ** cfg.rho  # noqa: E731
            t = (100.0 * u_of(i) - 1.0)
            tm = (100.0 * u_of(i - 0.5) - 1.0)
            tn = torch.where(i > 1, 100.0 * u_of(i - 1.0) - 1.0, torch.full_like(i, -1.0))
            u = u_of(i)
            a = torch.cos(torch.pi / 2 * u).to(torch.float32).unsqueeze(1)
            s = torch.sin(torch.pi / 2 * u).to(torch.float32).unsqueeze(1)
            z = a * batch + s * noise
            t32, tm32, tn32 = t.to(torch.float32), tm.to(torch.float32), tn.to(torch.float32)
            z2 = _teacher_two_steps(teacher, z, t32, tm32, tn32, sch)
            # x_tilde such that one DDIM step t -> tn from z with x0 = x_tilde lands on z2
            un = torch.where(i > 1, u_of(i - 1.0), torch.zeros_like(i))
            an = torch.cos(torch.pi / 2 * un).to(torch.float32).unsqueeze(1)
            sn = torch.sin(torch.pi / 2 * un).to(torch.float32).unsqueeze(1)
            ratio = sn / s
            x_tilde = (z2 - ratio * z) / (an - ratio * a)
            v_pred = nets.eps_of(model, z, t32)
            x_pred = a * z - s * v_pred
            # v-space loss on the x target: ||x - x~||^2 / sigma^2 = (1 + SNR) weighting
            loss = (((x_pred - x_tilde) ** 2) / (s ** 2)).mean()
        elif cfg.method == "pdt":
            loss = _pdt_loss(model, teacher, batch, noise, g, cfg)
        elif cfg.method == "eps":  # the recipe's loss (diffusion.train), e.g. to fine-tune the teacher
            sch_d = _recipe_schedule()
            t = torch.randint(0, sch_d.num_timesteps, (batch.shape[0],), generator=g)
            loss = ((nets.eps_of(model, sch_d.add_noise(batch, noise, t), t.to(torch.float32)) - noise) ** 2).mean()
        elif cfg.method == "td":
            loss = _td_loss(model, teacher, batch, noise, g, cfg)
        elif cfg.method == "cd":
            loss = _cd_loss(model, teacher, batch, noise, g, cfg)
        elif cfg.method == "tdc":
            loss = _tdc_loss(model, targets, g, cfg.batch_size)
        elif cfg.method == "dm":  # distribution matching through the student's own chain (+ regulariser)
            loss, part = _dm_loss(model, g, seed, step, cfg, targets)
            parts.append(part)
        else:
            raise ValueError(cfg.method)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad()
        diffusion._ema_update(ema, model, dcfg, step)
        sched.step()
        losses.append(loss.item())
        step += 1
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            now = time.perf_counter()
            wall += now - t0
            t0 = now
            diffusion._atomic_torch_save(
                dict(model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(),
                     sched=sched.state_dict(), step=step, wall=wall, losses=losses,
                     config=asdict(cfg), seed=seed, resumed_from=resumed_from)
                | ({"parts": parts} if parts else {}), ckpt_path)
            if step % 2500 == 0 or step == cfg.steps or cfg.method == "dm":
                log(f"{run_dir.name}: step {step}/{cfg.steps} loss(last 500) {np.mean(losses[-500:]):.4f} "
                    + (f"mmd2, reg (last 100) {np.mean(parts[-100:], axis=0).round(6).tolist()} " if parts else "")
                    + f"train {wall:.0f}s")
    diffusion._atomic_torch_save(ema.state_dict(), run_dir / "ema.pt")
    summary = {"config": asdict(cfg), "seed": seed, "train_wall_s": wall, "steps_per_s": cfg.steps / wall,
               "resumed_at_steps": resumed_from, "final_loss_last500": float(np.mean(losses[-500:]))}
    if parts:
        summary["final_mmd2_reg_last100"] = np.mean(parts[-100:], axis=0).tolist()
    tmp = summary_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, summary_path)
    return summary


def load_run(run_dir: Path) -> nn.Module:
    model = nets.build("dualscale")
    model.load_state_dict(torch.load(run_dir / "ema.pt", weights_only=True))
    model.eval()
    return model


# ---------------------------------------------------------------- stages

def sample_with(den: Denoiser, ds: str, sampler: str, ts: list[float], seed: int, start: str) -> np.ndarray:
    """10,000 samples; start 'unit' = N(0, I), 'data' = moment-matched Gaussian at ts[0]."""
    z = start_noise(seed)
    a, _ = den.schedule.alpha_sigma(ts[0])
    x = moment_start(ds, a * a, z) if start == "data" else z
    gen = torch.Generator().manual_seed(20_000 + seed)
    if sampler == "ancestral":
        return sample_ancestral(den, x, ts, gen).numpy()
    if sampler == "consistency":
        return sample_consistency(den, x, ts, gen).numpy()
    return SAMPLERS[sampler](den, x, ts).numpy()


def teacher_eval(ds: str, seeds: list[int], nfes=(1, 2, 4, 8)) -> list[dict]:
    model = load_shipped(ds)
    den = Denoiser(model, TeacherDiscrete(), "epsilon")
    rows = []
    for seed in seeds:
        for start in ("data", "unit"):
            x = sample_with(den, ds, "ancestral", [float(t) for t in range(99, -1, -1)], seed, start)
            rows.append(dict(method="teacher", dataset=ds, seed=seed, sampler="ddpm", spacing="all", nfe=100,
                             start=start, kl=kl_of(ds, x)))
            log(str(rows[-1]))
            for nfe in nfes:
                for spacing in ("trailing", "logsnr"):
                    ts = teacher_list(nfe, spacing)
                    for sampler in ("ddim", "dpmpp2m"):
                        if sampler == "dpmpp2m" and nfe < 3:
                            continue
                        x = sample_with(den, ds, sampler, ts, seed, start)
                        rows.append(dict(method="teacher", dataset=ds, seed=seed, sampler=sampler, spacing=spacing,
                                         nfe=nfe, start=start, timesteps=ts, kl=kl_of(ds, x)))
                        log(str(rows[-1]))
    return rows


def base_dir(ds: str, seed: int, tag: str = "") -> Path:
    return RUNS / f"{ds}-v{tag}-seed{seed}"


def pd_dir(ds: str, seed: int, n: int, tag: str = "") -> Path:
    return RUNS / f"{ds}-pd{tag}-n{n}-seed{seed}"


def stage_base(ds: str, seed: int, steps: int, tag: str = "", init: str = "scratch") -> dict:
    cfg = FewCfg(method="v", steps=steps, init=init)
    init_state = None
    if init == "shipped":
        init_state = load_shipped(ds).state_dict()
    return train_run(base_dir(ds, seed, tag), seed, data_of(ds), cfg, init_state=init_state)


def stage_pd(ds: str, seed: int, start_n: int, end_n: int, steps: int, rho: float, tag: str = "",
             base_tag: str = "", lr: float = 1e-4) -> None:
    """Rounds n = start_n, start_n/2, ..., end_n; round n distils the 2n-step sampler of the previous
    round's model (the first round's teacher is the base v-model) into an n-step student."""
    teacher_dir = base_dir(ds, seed, base_tag)
    n = start_n
    while n >= end_n:
        teacher = load_run(teacher_dir)
        for p in teacher.parameters():
            p.requires_grad_(False)
        cfg = FewCfg(method="pd", steps=steps, lr=lr, pd_student_steps=n, rho=rho, init=teacher_dir.name)
        out = pd_dir(ds, seed, n, tag)
        train_run(out, seed, data_of(ds), cfg, init_state=teacher.state_dict(), teacher=teacher)
        teacher_dir = out
        n //= 2


def eval_base(ds: str, seed: int, tag: str = "", nfes=(1, 2, 4, 8), rhos=(1.0, 2.0, 3.0),
              reference: bool = True) -> list[dict]:
    """The base v-model: DDIM and DPM-Solver++(2M) at each NFE on u_i = (i/n)^rho grids, plus the
    many-step references (DDIM 200 steps = its ODE; ancestral 100 steps)."""
    run = base_dir(ds, seed, tag)
    den = Denoiser(load_run(run), CosineZTSNR(), "v")
    rows = []
    method = f"v{tag}"
    if reference:
        for sampler, n in (("ddim", 200), ("ancestral", 100)):
            ts = warp_list(n, 1.0)
            x = sample_with(den, ds, sampler, ts, seed, "unit")
            rows.append(dict(method=method, dataset=ds, seed=seed, sampler=sampler, rho=1.0, nfe=n, kl=kl_of(ds, x)))
            log(str(rows[-1]))
    for nfe in nfes:
        for rho in rhos:
            for sampler in ("ddim", "dpmpp2m"):
                if sampler == "dpmpp2m" and nfe < 3:
                    continue
                ts = warp_list(nfe, rho)
                x = sample_with(den, ds, sampler, ts, seed, "unit")
                rows.append(dict(method=method, dataset=ds, seed=seed, sampler=sampler, rho=rho, nfe=nfe,
                                 timesteps=ts, kl=kl_of(ds, x)))
                log(str(rows[-1]))
    return rows


def eval_pd(ds: str, seed: int, tag: str = "", nfes=(1, 2, 4, 8), rho: float = 1.0) -> list[dict]:
    """Each PD student with DDIM on its own n-step grid (n = NFE)."""
    rows = []
    for n in nfes:
        run = pd_dir(ds, seed, n, tag)
        if not (run / "ema.pt").exists():
            continue
        den = Denoiser(load_run(run), CosineZTSNR(), "v")
        ts = warp_list(n, rho)
        x = sample_with(den, ds, "ddim", ts, seed, "unit")
        rows.append(dict(method=f"pd{tag}", dataset=ds, seed=seed, sampler="ddim", rho=rho, nfe=n, timesteps=ts,
                         kl=kl_of(ds, x)))
        log(str(rows[-1]))
    return rows


def pdt_dir(ds: str, seed: int, n: int, tag: str = "") -> Path:
    return RUNS / f"{ds}-pdt{tag}-n{n}-seed{seed}"


def stage_pdt(ds: str, seed: int, start_n: int, end_n: int, steps: int, tag: str = "", lr: float = 1e-4,
              base: int = 64, rho: float = 1.5, first_solver: str = "2s") -> None:
    """Progressive distillation of the shipped model: rounds n = start_n, ..., end_n (halving).
    With tag "plus" the first teacher is the fine-tuned shipped model of `teacher-plus` instead."""
    if tag == "plus":
        teacher, teacher_name = load_run(teacher_plus_dir(ds, seed)), teacher_plus_dir(ds, seed).name
    else:
        teacher, teacher_name = load_shipped(ds), "shipped"
    n = start_n
    while n >= end_n:
        for p in teacher.parameters():
            p.requires_grad_(False)
        cfg = FewCfg(method="pdt", steps=steps, lr=lr, pd_student_steps=n, init=teacher_name, grid_base=base,
                     grid_rho=rho, teacher_solver=first_solver if n == start_n else "ddim")
        out = pdt_dir(ds, seed, n, tag)
        train_run(out, seed, data_of(ds), cfg, init_state=teacher.state_dict(), teacher=teacher)
        teacher, teacher_name = load_run(out), out.name
        n //= 2


def eval_pdt(ds: str, seed: int, tag: str = "", nfes=(1, 2, 4, 8, 16, 32), base: int = 64,
             rho: float = 1.5, starts=("data", "unit")) -> list[dict]:
    rows = []
    for n in nfes:
        run = pdt_dir(ds, seed, n, tag)
        if not (run / "ema.pt").exists():
            continue
        den = Denoiser(load_run(run), TeacherDiscrete(), "epsilon")
        ts = teacher_grid(n, base, rho)
        for start in starts:
            x = sample_with(den, ds, "ddim", ts, seed, start)
            rows.append(dict(method=f"pdt{tag}", dataset=ds, seed=seed, sampler="ddim", start=start, nfe=n,
                             timesteps=ts, kl=kl_of(ds, x)))
            log(str(rows[-1]))
    return rows


def cd_dir(ds: str, seed: int, n: int, tag: str = "") -> Path:
    return RUNS / f"{ds}-cd{tag}-n{n}-seed{seed}"


def stage_cd(ds: str, seed: int, n: int, steps: int, tag: str = "", lr: float = 1e-4) -> None:
    teacher = load_shipped(ds)
    for p in teacher.parameters():
        p.requires_grad_(False)
    cfg = FewCfg(method="cd", steps=steps, lr=lr, pd_student_steps=n, init="shipped", teacher_solver="2s")
    train_run(cd_dir(ds, seed, n, tag), seed, data_of(ds), cfg, init_state=teacher.state_dict(), teacher=teacher)


FEWSTEP_DIR = MODELS / "fewstep"
FIXTURES = REPO / "tests" / "fixtures" / "fewstep"


def _write_manifest(man: dict, path: Path, ops: dict, diffs: dict) -> dict:
    """Writes an exported model's manifest beside it (atomically) and logs the export."""
    atomic.write_bytes(path.with_suffix(".json"), (json.dumps(man, indent=2) + "\n").encode())
    log(f"exported {path} ops {ops} max diffs {diffs}")
    return {"file": str(path.relative_to(REPO)), "ops": ops, "max_abs_diff": diffs, "sha256": man["sha256"]}


def export_pdt(ds: str, seed: int, n: int, tag: str = "", base: int = 64, rho: float = 1.5,
               rounds: list[int] | None = None, steps_per_round: int = 0, lr: float = 1e-4) -> dict:
    """Export the n-step PD student to models/fewstep/{ds}-dualscale-pd{n}.onnx + a manifest draft.

    Same graph family, inputs and outputs as the shipped model (x [N,2], t [N] -> eps, gate), checked
    against PyTorch with onnxruntime and tract by onnx_export.verify (<= 1e-5). The manifest is the
    shipped one plus a `sampler` block (the exact fixed-list DDIM the runtime must run)."""
    import onnx_export

    run = pdt_dir(ds, seed, n, tag)
    model = load_run(run)
    FEWSTEP_DIR.mkdir(parents=True, exist_ok=True)
    name = f"{ds}-dualscale-pd{n}"
    path = FEWSTEP_DIR / f"{name}.onnx"
    ops = onnx_export.export(model, "dualscale", path)
    diffs = onnx_export.verify(model, "dualscale", path)
    shipped = json.loads((MODELS / f"{ds}-dualscale.json").read_text())
    man = dict(shipped)
    man.update({
        "name": name, "file": path.name,
        "sha256": _sha256(path),
        "training": {"seed": seed, "method": "progressive_distillation", "teacher": shipped["file"],
                     "teacher_sha256": shipped["sha256"], "rounds_student_steps": rounds,
                     "steps_per_round": steps_per_round, "batch_size": 256, "lr": lr, "lr_schedule": "cosine",
                     "ema_decay": 0.995, "ema_every": 10, "grad_clip": 0.5,
                     "grid": f"teacher_grid(n, base={base}, rho={rho}) in models/train/fewstep.py"},
        "sampler": {"type": "ddim", "timesteps": [int(t) for t in teacher_grid(n, base, rho)],
                    "note": "DDIM (eta 0) over the listed timesteps; the step after the last listed timestep lands "
                            "on clean data (x0_hat). Start: the data-moment Gaussian at the first timestep "
                            "(--init auto)."},
    })
    return _write_manifest(man, path, ops, diffs)


def td_dir(ds: str, seed: int, n: int, tag: str = "") -> Path:
    return RUNS / f"{ds}-td{tag}-n{n}-seed{seed}"


def stage_td(ds: str, seed: int, ns: list[int], steps: int, tag: str = "", lr: float = 1e-4,
             base: int = 64, rho: float = 1.5) -> None:
    """One student per n, each distilled directly from the shipped teacher."""
    teacher = load_shipped(ds)
    for p in teacher.parameters():
        p.requires_grad_(False)
    for n in ns:
        cfg = FewCfg(method="td", steps=steps, lr=lr, pd_student_steps=n, init="shipped", grid_base=base,
                     grid_rho=rho, teacher_solver="dpmpp2m")
        train_run(td_dir(ds, seed, n, tag), seed, data_of(ds), cfg, init_state=teacher.state_dict(),
                  teacher=teacher)


def teacher_plus_dir(ds: str, seed: int, tag: str = "") -> Path:
    return RUNS / f"{ds}-teacherplus{tag}-seed{seed}"


def stage_teacher_plus(ds: str, seed: int, steps: int, tag: str = "", lr: float = 1e-4, batch: int = 512) -> None:
    """Fine-tune the shipped model with the recipe's own loss (same schedule, epsilon) for `steps`
    more steps (AdamW lr cosine to 0, EMA as the recipe): a better teacher for distillation."""
    cfg = FewCfg(method="eps", steps=steps, lr=lr, batch_size=batch, init="shipped")
    train_run(teacher_plus_dir(ds, seed, tag), seed, data_of(ds), cfg, init_state=load_shipped(ds).state_dict())


def tdc_dir(ds: str, seed: int, n: int, tag: str = "") -> Path:
    return RUNS / f"{ds}-tdc{tag}-n{n}-seed{seed}"


def _frozen(net: nn.Module) -> nn.Module:
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _cached_targets(run: Path, teacher: Callable[[], nn.Module], ds: str, seed: int, grid: list[int], sub_steps: int,
                    count: int, data: np.ndarray | None = None) -> dict:
    """tdc_targets for a run, built once into RUNS/<run>/targets.pt (teacher() is called only to
    build them) and checked against grid / sub_steps / count when read back."""
    run.mkdir(parents=True, exist_ok=True)
    cache = run / "targets.pt"
    if cache.exists():
        targets = torch.load(cache, weights_only=False)
    else:
        t0 = time.perf_counter()
        targets = tdc_targets(teacher(), ds, seed, grid, sub_steps, count, data=data)
        targets["wall_s"] = time.perf_counter() - t0
        diffusion._atomic_torch_save(targets, cache)
    if targets["grid"] != list(grid) or targets["sub_steps"] != sub_steps or targets["t"].shape[0] != count:
        raise RuntimeError(f"{cache} was built for another grid/sub_steps/count; delete it")
    return targets


def stage_tdc(ds: str, seed: int, grid: list[int], steps: int, sub_steps: int = 8, count: int = 262_144,
              tag: str = "", lr: float = 2e-4, batch: int = 256, teacher: str = "plus") -> dict:
    """Direct distillation on an explicit student list with cached teacher targets (tdc_targets):
    the targets are built once (RUNS/<run>/targets.pt), then the student (initialised from the
    teacher) regresses them; ~4x cheaper per step than `td`, which re-solves the teacher each
    step. teacher "plus": the `teacher-plus` run of (ds, seed); "shipped": models/{ds}-dualscale.onnx."""
    if teacher == "plus":
        tnet, tname = load_run(teacher_plus_dir(ds, seed)), teacher_plus_dir(ds, seed).name
    else:
        tnet, tname = load_shipped(ds), "shipped"
    tnet = _frozen(tnet)
    run = tdc_dir(ds, seed, len(grid), tag)
    cfg = FewCfg(method="tdc", steps=steps, lr=lr, batch_size=batch, init=tname, teacher=tname,
                 grid=tuple(int(t) for t in grid), sub_steps=sub_steps, cache=count, teacher_solver="dpmpp2m")
    targets = _cached_targets(run, lambda: tnet, ds, seed, list(cfg.grid), sub_steps, count)
    return train_run(run, seed, data_of(ds), cfg, init_state=tnet.state_dict(), targets=targets)


def export_tdc(ds: str, seed: int, n: int, tag: str = "", weights: str = "final", ship: bool = False,
               method: str = "tdc") -> dict:
    """Export a `tdc` student to models/fewstep/{ds}-dualscale-td{n}{tag}[-step{S}].onnx + manifest
    (onnx_export's one-timestep-per-call form, as export_teacher_plus) whose `sampler` block is
    DDIM (eta 0) on the student's list. weights: "final" (ema.pt), or "ema" / "raw" from the
    latest ckpt.pt of a run in progress (the file name then carries its step). ship: write it as
    the shipped few-step model models/{ds}-dualscale-fewstep.onnx instead. The teacher named in the
    manifest is the teacher-plus export (`teacher_plus_path`), which must exist. method "dm": the
    same for a `dm` run (export-dm; draft name {ds}-dualscale-dm{n}{tag}[-step{S}])."""
    import onnx_export

    run = (dm_dir if method == "dm" else tdc_dir)(ds, seed, n, tag)
    model, cfg, suffix, step = _run_weights(run, weights)
    FEWSTEP_DIR.mkdir(parents=True, exist_ok=True)
    name = f"{ds}-dualscale-fewstep" if ship else f"{ds}-dualscale-{'dm' if method == 'dm' else 'td'}{n}{tag}{suffix}"
    path = (MODELS if ship else FEWSTEP_DIR) / f"{name}.onnx"
    tpath = MODELS / f"{ds}-dualscale.json" if cfg["teacher"] == "shipped" else teacher_plus_path(ds).with_suffix(".json")
    if not tpath.exists():
        raise SystemExit(f"export-tdc: the teacher's manifest {tpath} is missing; run `fewstep.py export --datasets {ds}` first")
    tman = json.loads(tpath.read_text())
    ops = onnx_export.export(model, "dualscale", path)
    diffs = onnx_export.verify(model, "dualscale", path)
    shipped = json.loads((MODELS / f"{ds}-dualscale.json").read_text())
    man = dict(shipped)
    man["inputs"][1]["shape"], man["outputs"][1]["shape"] = [1], [1, 2]  # onnx_export's form
    grid = " ".join(map(str, cfg["grid"]))
    man.update({
        "name": name, "file": path.name,
        "sha256": _sha256(path),
        "training": {"seed": seed, "method": "direct distillation (TRACT-like), cached teacher targets",
                     "teacher": tman["file"], "teacher_sha256": tman["sha256"], "teacher_solver": f"DPM-Solver++(2M), <= {cfg['sub_steps']} "
                     "steps per student interval, uniform in log-SNR (fewstep.interval_subgrid)",
                     "targets": cfg["cache"], "steps": step, "of_steps": cfg["steps"], "batch_size": cfg["batch_size"],
                     "lr": cfg["lr"], "lr_schedule": "cosine", "ema_decay": cfg["ema_decay"],
                     "ema_every": cfg["ema_every"], "grad_clip": cfg["grad_clip"], "weights": weights,
                     "command": f"python models/train/fewstep.py tdc --datasets {ds} --seeds {seed} --grid {grid} "
                                f"--sub-steps {cfg['sub_steps']} --cache {cfg['cache']} --steps {cfg['steps']} "
                                f"--batch {cfg['batch_size']} --pd-lr {cfg['lr']}" + (f" --tag {tag}" if tag else "")
                                + (f" --teacher {cfg['teacher']}" if cfg["teacher"] == "shipped" else "")
                                + f" && python models/train/fewstep.py export-tdc --datasets {ds} --seeds {seed} "
                                f"--grid {grid}" + (f" --tag {tag}" if tag else "")
                                + ("" if cfg["teacher"] == "shipped" else
                                   f" (after the teacher-plus run: {tman['training'].get('command', '')})")},
        "sampler": {"type": "ddim", "timesteps": [int(t) for t in cfg["grid"]],
                    "note": "DDIM (eta 0) over the listed timesteps, the list the student was distilled for; the "
                            "step after the last listed timestep lands on clean data (x0_hat). Start: the "
                            "data-moment Gaussian at the first timestep (--init auto)."},
    })
    if method == "dm":
        man["training"] = _dm_training(ds, seed, cfg, tman, step, weights, tag, ship)
    elif ship:
        cmd = f"export-tdc --datasets {ds} --seeds {seed} --grid {grid}"
        man["training"]["command"] = man["training"]["command"].replace(cmd, cmd + " --ship")
    return _write_manifest(man, path, ops, diffs)


# the tdc student each dm run starts from: {dataset: (file, sha256, how it was made)}
DM_INITS = {
    "circle": ("circle-dualscale-fewstep.onnx", "f578606133cc10327f41b9b5f3e743b199b01b99ef3e8b73e796197860c1f6ee",
               "python models/train/fewstep.py tdc --datasets circle --seeds 0 --grid 99 59 31 15 7 3 1 0 "
               "--sub-steps 8 --cache 262144 --steps 12000 --batch 256 --pd-lr 0.0002 && python "
               "models/train/fewstep.py export-tdc --datasets circle --seeds 0 --grid 99 59 31 15 7 3 1 0 --ship"),
}


def _dm_training(ds: str, seed: int, cfg: dict, tman: dict, step: int, weights: str, tag: str, ship: bool) -> dict:
    """The manifest's `training` block of a dm export."""
    init_file, init_sha = cfg["init"].rsplit("@", 1)
    made = DM_INITS.get(ds)
    how = made[2] if made and made[1] == init_sha else "unknown"
    grid = " ".join(map(str, cfg["grid"]))
    div = cfg.get("dm_divergence", "mmd")
    bws = " ".join(f"{h:g}" for h in cfg["dm_bandwidths"])
    dm_cmd = (f"python models/train/fewstep.py dm --datasets {ds} --seeds {seed} --grid {grid} --steps {cfg['steps']} "
              f"--pd-lr {cfg['lr']} --dm-batch {cfg['dm_batch']} --dm-data-batch {cfg['dm_data_batch']} "
              + (f"--dm-bandwidths {bws} " if div == "mmd" else "--divergence knn ")
              + f"--ckpt-every {cfg['ckpt_every']} --reg-weight {cfg['reg_weight']:g} --batch {cfg['batch_size']} "
              f"--sub-steps {cfg['sub_steps']} --cache {cfg['cache']} --init-onnx <{init_file} sha256 {init_sha}>"
              + (f" --tag {tag}" if tag else ""))
    exp_cmd = (f"python models/train/fewstep.py export-dm --datasets {ds} --seeds {seed} --grid {grid}"
               + (f" --tag {tag}" if tag else "") + (f" --weights {weights}" if weights != "final" else "")
               + (" --ship" if ship else ""))
    return {"seed": seed,
            "method": "distribution matching: fine-tune of the distilled (tdc) student through its own "
                      f"{len(cfg['grid'])}-step DDIM chain (gradients through every step, data-moment start) "
                      + ("minimising the squared MMD (sum of Gaussian kernels) to fresh data draws"
                         if div == "mmd" else
                         f"minimising the k-NN (k={K}) estimate of KL(data || samples) against fresh data draws")
                      + ", plus the tdc distillation loss on cached teacher targets as a regulariser",
            "init": init_file, "init_sha256": init_sha, "init_command": how,
            "teacher": tman["file"], "teacher_sha256": tman["sha256"],
            "teacher_solver": f"DPM-Solver++(2M), <= {cfg['sub_steps']} steps per student interval, uniform in "
                              "log-SNR (fewstep.interval_subgrid); regulariser targets only",
            "targets": cfg["cache"], "reg_weight": cfg["reg_weight"],
            "divergence": div, "mmd_bandwidths": list(cfg["dm_bandwidths"]), "student_samples_per_step": cfg["dm_batch"],
            "data_points_per_step": cfg["dm_data_batch"],
            "data": f"fresh draws of models/train/datasets.py {ds}() (generator seeds >= 7,000,000, "
                    f"fewstep.fresh_data), never the evaluation reference models/data/{ds}.npy",
            "steps": step, "of_steps": cfg["steps"], "batch_size": cfg["batch_size"], "lr": cfg["lr"],
            "lr_schedule": "cosine", "optimizer": "AdamW", "ema_decay": cfg["ema_decay"], "ema_every": cfg["ema_every"],
            "grad_clip": cfg["grad_clip"], "weights": weights,
            "command": f"{dm_cmd} && {exp_cmd}"}


# ---------------------------------------------------------------- distribution matching (dm)
#
# Fine-tunes a `tdc` student through its own fixed-list DDIM chain: each step draws `dm_batch`
# unit noises, builds the data-moment start at grid[0] (`moment_start`, what the runtime's
# --init auto does), runs the student's n-step DDIM chain with gradients through every step, and
# minimises the squared MMD (sum of Gaussian kernels, cfg.dm_bandwidths) between its outputs and
# `dm_data_batch` FRESH points of the dataset's generator (`fresh_data`: datasets.make with seeds
# >= 7,000,000, never the reference models/data/{ds}.npy that kl_of and `dualscale eval` use),
# plus reg_weight x the `tdc` loss on cached teacher targets (their x0 from one fresh draw of
# 100,000 points) so the network stays an epsilon-predictor of its teacher.

DM_BANDWIDTHS = (0.01, 0.03, 0.1, 0.3, 1.0)


def fresh_data(ds: str, seed: int, index: int, n: int) -> np.ndarray:
    """n fresh points of datasets.make(ds): generator seed 7,000,000 + seed for index -1 (the
    regulariser's x0 pool), 10,000,000 (seed + 1) + index for the per-step batches (index < 10^7);
    never 42 (the reference)."""
    s = 7_000_000 + seed if index < 0 else 10_000_000 * (seed + 1) + index
    return datasets.make(ds, n, seed=s)


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths) -> torch.Tensor:
    """Unbiased squared MMD between samples x [n,2] and y [m,2] for the kernel
    sum_h exp(-|a - b|^2 / (2 h^2)) (float32). The y-y term (no gradient) uses the first
    min(m, 1024) points of y."""
    x, y = x.to(torch.float32), y.to(torch.float32)

    def ksum(a, b):
        d2 = ((a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * a @ b.T).clamp_min(0.0)
        k = torch.exp(d2 * (-0.5 / (bandwidths[0] ** 2)))
        for h in bandwidths[1:]:
            k = k + torch.exp(d2 * (-0.5 / (h * h)))
        return k

    n, nb = x.shape[0], len(bandwidths)
    kxx = (ksum(x, x).sum() - n * nb) / (n * (n - 1))
    with torch.no_grad():
        y1 = y[:1024]
        m1 = y1.shape[0]
        kyy = (ksum(y1, y1).sum() - m1 * nb) / (m1 * (m1 - 1))
    return kxx + kyy - 2.0 * ksum(x, y).mean()


def knn_kl(x: torch.Tensor, y: torch.Tensor, k: int = K) -> torch.Tensor:
    """The k-NN estimate of KL(data y || samples x) in nats, up to a constant: 2 mean_j ln nu_k(j),
    nu_k(j) the Euclidean distance from y_j to its k-th nearest x (what kl.kl_bits estimates, with
    fresh data in place of the reference and Euclidean in place of max norm)."""
    d2 = (y[:, None, :].to(torch.float64) - x[None, :, :].to(torch.float64)).pow(2).sum(-1)
    return torch.log(torch.topk(d2, k, dim=1, largest=False).values[:, -1] + 1e-12).mean()


def _dm_loss(model, g, seed: int, step: int, cfg: FewCfg, targets: dict | None):
    sch = TeacherDiscrete()
    a0, _ = sch.alpha_sigma(float(cfg.grid[0]))
    x = moment_start(cfg.dataset, a0 * a0, torch.randn(cfg.dm_batch, 2, generator=g))
    out = sample_ddim(Denoiser(model, sch, "epsilon", grad=True), x, [float(t) for t in cfg.grid])
    y = torch.from_numpy(fresh_data(cfg.dataset, seed, step, cfg.dm_data_batch))
    d = (mmd2(out, y, cfg.dm_bandwidths) if cfg.dm_divergence == "mmd" else knn_kl(out, y)).to(torch.float32)
    reg = _tdc_loss(model, targets, g, cfg.batch_size) if cfg.reg_weight > 0 else torch.zeros(())
    return d + cfg.reg_weight * reg, (d.item(), reg.item())


def dm_dir(ds: str, seed: int, n: int, tag: str = "") -> Path:
    return RUNS / f"{ds}-dm{tag}-n{n}-seed{seed}"


def stage_dm(ds: str, seed: int, grid: list[int], steps: int, init_onnx: str | None = None, tag: str = "",
             lr: float = 5e-5, batch: int = 1024, data_batch: int = 4096, bandwidths=DM_BANDWIDTHS,
             reg_weight: float = 1.0, reg_batch: int = 256, sub_steps: int = 8, count: int = 131_072,
             divergence: str = "mmd", ckpt_every: int = 100) -> dict:
    """Distribution-matching fine-tune of a distilled student (module comment above). init_onnx:
    the student to start from (default models/{ds}-dualscale-fewstep.onnx; its sha256 is part of
    the run's config, so a changed file cannot silently resume a run). The regulariser's teacher
    is the teacher-plus export `teacher_plus_path(ds)` (the weights the `tdc` student learned from);
    its targets are cached in RUNS/<run>/targets.pt."""
    init_path = Path(init_onnx) if init_onnx else MODELS / f"{ds}-dualscale-fewstep.onnx"
    tpath = teacher_plus_path(ds)
    cfg = FewCfg(method="dm", steps=steps, lr=lr, batch_size=reg_batch, ema_decay=0.99, ema_every=1,
                 ema_update_after_step=20, init=f"{init_path.name}@{_sha256(init_path)}",
                 teacher=f"{tpath.name}@{_sha256(tpath)}" if reg_weight > 0 else "",
                 grid=tuple(int(t) for t in grid), sub_steps=sub_steps if reg_weight > 0 else 0,
                 cache=count if reg_weight > 0 else 0, teacher_solver="dpmpp2m" if reg_weight > 0 else "ddim",
                 dataset=ds, dm_batch=batch, dm_data_batch=data_batch,
                 dm_bandwidths=tuple(float(h) for h in bandwidths) if divergence == "mmd" else (),
                 reg_weight=reg_weight, dm_divergence=divergence, ckpt_every=ckpt_every)
    run = dm_dir(ds, seed, len(grid), tag)
    run.mkdir(parents=True, exist_ok=True)
    targets = None
    if reg_weight > 0:
        targets = _cached_targets(run, lambda: _frozen(load_shipped(ds, path=tpath)), ds, seed, list(cfg.grid),
                                  sub_steps, count, data=fresh_data(ds, seed, -1, 100_000))
    init_state = load_shipped(ds, path=init_path).state_dict()
    return train_run(run, seed, None, cfg, init_state=init_state, targets=targets)


def _run_weights(run: Path, weights: str) -> tuple[nn.Module, dict, str, int]:
    """(model in eval mode, the run's config, file-name suffix, step) for weights "final" (ema.pt)
    or "ema" / "raw" of the latest ckpt.pt."""
    ck = torch.load(run / "ckpt.pt", weights_only=False)
    model = nets.build("dualscale")
    if weights == "final":
        model.load_state_dict(torch.load(run / "ema.pt", weights_only=True))
        suffix, step = "", ck["config"]["steps"]
    else:
        model.load_state_dict(ck["ema" if weights == "ema" else "model"])
        suffix, step = f"-step{ck['step']}{'' if weights == 'ema' else '-raw'}", ck["step"]
    model.eval()
    return model, ck["config"], suffix, step


def eval_dm(ds: str, seed: int, n: int, tag: str = "", weights: str = "final", noise_seeds=(0, 1, 2),
            init_onnx: str | None = None) -> list[dict]:
    """Recipe KL (kl_of, 10,000 points, data-moment start) of a dm run's DDIM chain on its list for
    noise seeds `noise_seeds`; with init_onnx also of that file (the student it started from).
    Rows appended to RUNS/eval-dm-{ds}-seed{seed}.json (read by `report`)."""
    run = dm_dir(ds, seed, n, tag)
    model, cfg, suffix, step = _run_weights(run, weights)
    cands = [(f"dm{tag}", model, step, weights)]
    if init_onnx:
        cands.insert(0, (f"dm-init:{Path(init_onnx).name}@{_sha256(Path(init_onnx))[:12]}",
                         load_shipped(ds, path=Path(init_onnx)), 0, "onnx"))
    path = RUNS / f"eval-dm-{ds}-seed{seed}.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    ts = [float(t) for t in cfg["grid"]]
    for method, net, st, w in cands:
        den = Denoiser(net, TeacherDiscrete(), "epsilon")
        kls = []
        for ns in noise_seeds:
            x = sample_with(den, ds, "ddim", ts, ns, "data")
            kls.append(kl_of(ds, x))
            rows.append(dict(method=method, dataset=ds, seed=seed, noise_seed=ns, sampler="ddim", start="data",
                             nfe=len(ts), timesteps=ts, weights=w, step=st, kl=kls[-1]))
        log(f"{method} {w} step {st}: KL {[round(v, 4) for v in kls]} mean {np.mean(kls):.4f}")
    path.write_text(json.dumps(rows, indent=1))
    return rows


def eval_td(ds: str, seed: int, tag: str = "", nfes=(1, 2, 4, 8), base: int = 64, rho: float = 1.5,
            starts=("data", "unit"), method: str = "td", dir_of=None) -> list[dict]:
    """Students on the teacher's integer grid G_n (td, or any dir_of(ds, seed, n, tag))."""
    dir_of = dir_of or td_dir
    rows = []
    for n in nfes:
        run = dir_of(ds, seed, n, tag)
        if not (run / "ema.pt").exists():
            continue
        den = Denoiser(load_run(run), TeacherDiscrete(), "epsilon")
        cfg = json.loads((run / "train.json").read_text())["config"]
        ts = teacher_grid(n, cfg["grid_base"], cfg["grid_rho"])
        sampler = "consistency" if cfg["method"] == "cd" else "ddim"
        for start in starts:
            x = sample_with(den, ds, sampler, ts, seed, start)
            rows.append(dict(method=f"{method}{tag}", dataset=ds, seed=seed, sampler=sampler, start=start, nfe=n,
                             timesteps=ts, kl=kl_of(ds, x)))
            log(str(rows[-1]))
    return rows


def eval_teacher_plus(ds: str, seed: int, tag: str = "", starts=("data", "unit")) -> list[dict]:
    run = teacher_plus_dir(ds, seed, tag)
    if not (run / "ema.pt").exists():
        return []
    den = Denoiser(load_run(run), TeacherDiscrete(), "epsilon")
    rows = []
    for start in starts:
        x = sample_with(den, ds, "ancestral", [float(t) for t in range(99, -1, -1)], seed, start)
        rows.append(dict(method=f"teacherplus{tag}", dataset=ds, seed=seed, sampler="ddpm", nfe=100, start=start,
                         kl=kl_of(ds, x)))
        for n in (8, 16, 32):
            x = sample_with(den, ds, "dpmpp2m", teacher_grid(n), seed, start)
            rows.append(dict(method=f"teacherplus{tag}", dataset=ds, seed=seed, sampler="dpmpp2m", nfe=n,
                             start=start, timesteps=teacher_grid(n), kl=kl_of(ds, x)))
    for r in rows:
        log(str(r))
    return rows


def eval_all(ds: str, seed: int) -> list[dict]:
    """Every finished run of (ds, seed) under RUNS; rows saved to RUNS/eval-{ds}-seed{seed}.json."""
    rows = []
    if base_dir(ds, seed).joinpath("ema.pt").exists():
        rows += eval_base(ds, seed, rhos=(1.0, 2.0))
    rows += eval_pdt(ds, seed, nfes=(1, 2, 4, 8, 16, 32))
    rows += eval_td(ds, seed, base=64)
    rows += eval_td(ds, seed, base=64, method="cd", dir_of=cd_dir)
    rows += eval_teacher_plus(ds, seed)
    for tag in ("plus",):
        rows += eval_td(ds, seed, tag=tag, method="td")
    path = RUNS / f"eval-{ds}-seed{seed}.json"
    path.write_text(json.dumps(rows, indent=1))
    return rows


# The sampler each shipped few-step model runs by default (its manifest's `sampler` block): the
# best of models/fewstep_lists.py's search at 8 NFE with the Rust runtime (seed 0, then the best
# three on seeds 1 and 2; command and results in models/report/sections/20-fewstep.md). A dataset
# without an entry gets DPM-Solver++(2M) on the log-SNR-uniform list.
FEWSTEP_SAMPLERS = {
    "dino": ("dpmpp-3m", [99, 59, 31, 15, 7, 3, 1, 0]),
    "moons": ("dpmpp-3m", [99, 82, 61, 42, 27, 16, 9, 5]),
    "circle": ("dpmpp-3m", [99, 67, 42, 25, 14, 8, 4, 2]),
    "line": ("dpmpp-3m", [99, 83, 63, 44, 29, 18, 11, 6]),
}
SOLVER_NOTES = {
    "dpmpp-2m": "DPM-Solver++(2M) (data prediction), first step first order",
    "dpmpp-3m": "DPM-Solver++(3M) (data prediction), lower orders while fewer x0 predictions exist",
    "unipc": "UniPC (bh2, order 2)",
    "ddim": "DDIM (eta 0)",
}


# Datasets whose shipped few-step model is a distilled `tdc` student (export-tdc --ship); their
# fine-tuned teacher is exported as a draft, models/fewstep/{ds}-dualscale-plus.onnx.
SHIPPED_STUDENTS = {"dino": [99, 30, 11, 4], "circle": [99, 59, 31, 15, 7, 3, 1, 0]}


def teacher_plus_path(ds: str) -> Path:
    """Where `export` writes the fine-tuned teacher: the shipped few-step model, or for the
    SHIPPED_STUDENTS datasets the draft models/fewstep/{ds}-dualscale-plus.onnx."""
    return FEWSTEP_DIR / f"{ds}-dualscale-plus.onnx" if ds in SHIPPED_STUDENTS else MODELS / f"{ds}-dualscale-fewstep.onnx"


def export_teacher_plus(ds: str, seed: int, nfe: int = 8) -> dict:
    """Ship the fine-tuned teacher (`teacher-plus`) as models/{ds}-dualscale-fewstep.onnx (for the
    SHIPPED_STUDENTS datasets: as the draft models/fewstep/{ds}-dualscale-plus.onnx, the students'
    teacher) with a manifest whose `sampler` block (models/MANIFEST.md) is FEWSTEP_SAMPLERS[ds], or
    DPM-Solver++(2M) on the log-SNR-uniform list of `nfe` steps: what `dualscale generate` runs for
    it by default."""
    import onnx_export

    run = teacher_plus_dir(ds, seed)
    shipped = json.loads((MODELS / f"{ds}-dualscale.json").read_text())
    export_cmd = f"python models/train/fewstep.py export --datasets {ds} --seeds {seed}"
    if (run / "train.json").exists():
        model = load_run(run)
        cfg = json.loads((run / "train.json").read_text())["config"]
        training = {"seed": seed, "method": "fine-tune of the shipped model with the recipe's loss",
                    "init": shipped["file"], "init_sha256": shipped["sha256"], "steps": cfg["steps"],
                    "batch_size": cfg["batch_size"], "lr": cfg["lr"], "lr_schedule": "cosine",
                    "ema_decay": cfg["ema_decay"], "ema_every": cfg["ema_every"], "grad_clip": cfg["grad_clip"],
                    "command": f"python models/train/fewstep.py teacher-plus --datasets {ds} --seeds {seed} "
                               f"--steps {cfg['steps']} --batch {cfg['batch_size']} && {export_cmd}"}
    else:  # no fine-tuning run: the shipped weights with a tuned sampler
        model = load_shipped(ds)
        training = {"seed": seed, "method": "none: the shipped model's weights, with the sampler below",
                    "init": shipped["file"], "init_sha256": shipped["sha256"], "command": export_cmd}
    path = teacher_plus_path(ds)
    name = path.stem
    ops = onnx_export.export(model, "dualscale", path)
    diffs = onnx_export.verify(model, "dualscale", path)
    man = dict(shipped)
    man["inputs"][1]["shape"], man["outputs"][1]["shape"] = [1], [1, 2]  # onnx_export's form
    if ds in FEWSTEP_SAMPLERS:
        (kind, ts), how = FEWSTEP_SAMPLERS[ds], "found by models/fewstep_lists.py"
    else:
        kind, ts, how = "dpmpp-2m", [int(t) for t in teacher_list(nfe, "logsnr")], "uniform in log-SNR"
    man.update({
        "name": name, "file": path.name,
        "sha256": _sha256(path),
        "training": training,
        "sampler": {"type": kind, "timesteps": ts,
                    "note": f"{SOLVER_NOTES[kind]}, over the listed timesteps ({how}); the step after the last "
                            "listed timestep lands on clean data (x0_hat). Start: the data-moment Gaussian at the "
                            "first timestep (--init auto)."},
    })
    return _write_manifest(man, path, ops, diffs)


@torch.no_grad()
def write_fixture(onnx_path: Path, out_dir: Path, count: int = 64, seed: int = 0) -> dict:
    """Parity fixture for the runtime's run of a model's recommended sampler (its manifest's
    `sampler` block): runs the *ONNX file* (onnxruntime, so the Rust side compares against the same
    graph) through this file's sampler of that type from given unit noise.

    Writes noise.npy [count,2] (unit normal, float32: feed with --init-noise), init.npy (the
    data_stats start built from it in float64, then float32), out.npy (the samples) and
    expected.json (sampler, timesteps, abar per timestep, tolerance)."""
    import onnxruntime as ort

    man = json.loads(onnx_path.with_suffix(".json").read_text())
    kind, ts = man["sampler"]["type"], man["sampler"]["timesteps"]
    run_sampler = {"ddim": sample_ddim, "dpmpp-2m": sample_dpmpp2m, "dpmpp-3m": sample_dpmpp3m}[kind]
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    shared_t = sess.get_inputs()[1].shape[0] == 1  # one timestep per call (onnx_export's form)

    class OrtNet(nn.Module):
        def forward(self, x, t):
            e, w = sess.run(None, {"x": x.numpy(), "t": (t[:1] if shared_t else t).numpy()})
            return torch.from_numpy(e), torch.from_numpy(w)

    sch = TeacherDiscrete()
    den = Denoiser(OrtNet(), sch, "epsilon")
    z = torch.randn(count, 2, generator=torch.Generator().manual_seed(seed))
    a0, _ = sch.alpha_sigma(ts[0])
    x = moment_start(man["dataset"], a0 * a0, z)
    out = run_sampler(den, x.clone(), ts)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "noise.npy", z.numpy())
    np.save(out_dir / "init.npy", x.numpy())
    np.save(out_dir / "out.npy", out.numpy())
    info = {"model": onnx_path.name, "sha256": man["sha256"], "sampler": kind, "timesteps": [int(t) for t in ts],
            "abar": [float(sch.abar[int(t)]) for t in ts], "count": count, "seed": seed, "nfe": den.nfe,
            "algorithm": f"models/train/fewstep.py {run_sampler.__name__}, epsilon prediction, "
                         "the step after the last listed timestep outputs x0_hat",
            "tolerance_abs": 1e-4}
    (out_dir / "expected.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def write_report_json() -> dict:
    """Merge every saved evaluation (RUNS/teacher-eval-*.json, RUNS/eval-*.json) into
    models/report/fewstep.json: all rows (those already in the file kept, so a checkout without
    the earlier runs adds to it), plus the best KL per (dataset, method, start, nfe)."""
    rows = json.loads(REPORT_JSON.read_text())["rows"] if REPORT_JSON.exists() else []
    for path in sorted(RUNS.glob("teacher-eval-*.json")) + sorted(RUNS.glob("eval-*.json")):
        rows += json.loads(path.read_text())
    seen, uniq = set(), []
    for r in rows:
        key = json.dumps({k: v for k, v in r.items() if k != "kl"}, sort_keys=True)
        if key not in seen:
            seen.add(key)
            uniq.append(r)
    best: dict = {}
    for r in uniq:
        key = (f"{r['dataset']}|{r['method']}|{r.get('start', 'unit')}|{r['nfe']}|seed{r['seed']}"
               f"|noise{r.get('noise_seed', r['seed'])}")
        if key not in best or r["kl"] < best[key]["kl"]:
            best[key] = {k: r[k] for k in r if k != "timesteps"} | {"timesteps": r.get("timesteps")}
    out = {"format": "dualscale-fewstep-results/1", "k": K, "n_data": datasets.N_POINTS, "n_samples": N_SAMPLES,
           "kl": "KL(data || samples) in bits, models/train/kl.py", "rows": uniq, "best": best}
    REPORT_JSON.parent.mkdir(parents=True, exist_ok=True)
    tmp = REPORT_JSON.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    os.replace(tmp, REPORT_JSON)
    return out


def other_dataset(ds: str, seed: int, pd_steps: int = 2500) -> list[dict]:
    """PD rounds 32 -> 16 -> 8 of the shipped model, then the teacher's 100-step DDPM, the teacher's
    DPM-Solver++(2M) with the log-SNR list at 4 / 8 NFE and the students' KL (data and unit starts)."""
    stage_pdt(ds, seed, 32, 8, pd_steps)
    den = Denoiser(load_shipped(ds), TeacherDiscrete(), "epsilon")
    rows = []
    for start in ("data", "unit"):
        x = sample_with(den, ds, "ancestral", [float(t) for t in range(99, -1, -1)], seed, start)
        rows.append(dict(method="teacher", dataset=ds, seed=seed, sampler="ddpm", spacing="all", nfe=100,
                         start=start, kl=kl_of(ds, x)))
        for n in (4, 8):
            ts = teacher_list(n, "logsnr")
            x = sample_with(den, ds, "dpmpp2m", ts, seed, start)
            rows.append(dict(method="teacher", dataset=ds, seed=seed, sampler="dpmpp2m", spacing="logsnr", nfe=n,
                             start=start, timesteps=ts, kl=kl_of(ds, x)))
    for r in rows:
        log(str(r))
    rows += eval_pdt(ds, seed, nfes=(8, 16, 32))
    (RUNS / f"eval-other-{ds}-seed{seed}.json").write_text(json.dumps(rows, indent=1))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["teacher-eval", "base", "pd", "pdt", "cd", "td", "teacher-plus", "eval", "report", "other",
                                        "export", "fixture", "tdc", "export-tdc", "dm", "export-dm", "eval-dm"])
    ap.add_argument("--datasets", nargs="+", default=["dino"], choices=datasets.NAMES)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--tag", default="")
    ap.add_argument("--base-tag", default="")
    ap.add_argument("--init", default="scratch", choices=["scratch", "shipped"])
    ap.add_argument("--pd-start", type=int, default=64)
    ap.add_argument("--pd-end", type=int, default=1)
    ap.add_argument("--pd-steps", type=int, default=2000)
    ap.add_argument("--pd-lr", type=float, default=1e-4)
    ap.add_argument("--rho", type=float, default=1.0)
    ap.add_argument("--ns", nargs="+", type=int, default=[8, 4])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--base", type=int, default=32, help="td: base grid size (sub-steps = base / n)")
    ap.add_argument("--grid", nargs="+", type=int, default=[99, 30, 11, 4], help="tdc: the student's timestep list")
    ap.add_argument("--sub-steps", type=int, default=8, help="tdc: teacher steps per student interval")
    ap.add_argument("--cache", type=int, default=262_144, help="tdc: number of cached targets")
    ap.add_argument("--teacher", default="plus", choices=["plus", "shipped"], help="tdc: the teacher")
    ap.add_argument("--weights", default="final", choices=["final", "ema", "raw"],
                    help="export-tdc: ema.pt, or the latest ckpt.pt's EMA / raw weights")
    ap.add_argument("--init-onnx", default=None,
                    help="dm: the student to fine-tune (default models/{ds}-dualscale-fewstep.onnx); eval-dm: also evaluate it")
    ap.add_argument("--dm-batch", type=int, default=1024, help="dm: student samples per step")
    ap.add_argument("--dm-data-batch", type=int, default=4096, help="dm: fresh data points per step")
    ap.add_argument("--dm-bandwidths", nargs="+", type=float, default=list(DM_BANDWIDTHS), help="dm: MMD kernel bandwidths")
    ap.add_argument("--reg-weight", type=float, default=1.0, help="dm: weight of the cached-target distillation loss")
    ap.add_argument("--divergence", default="mmd", choices=["mmd", "knn"], help="dm: the sample-based divergence")
    ap.add_argument("--ckpt-every", type=int, default=100, help="dm: checkpoint interval (steps)")
    ap.add_argument("--ship", action="store_true",
                    help="export-tdc: write the student as models/{ds}-dualscale-fewstep.onnx (the shipped few-step model)")
    args = ap.parse_args(argv)
    if os.nice(0) < 15:
        os.nice(15 - os.nice(0))
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    RUNS.mkdir(parents=True, exist_ok=True)
    if args.command == "report":
        write_report_json()
        return 0
    if args.command == "fixture":  # parity fixtures of the shipped few-step models (tests/parity.rs)
        for path in sorted(MODELS.glob("*-dualscale-fewstep.onnx")):
            if json.loads(path.with_suffix(".json").read_text())["kind"] == "image":
                continue   # the image model's fixture: models/train/image_fewstep.py fixture
            log(str(write_fixture(path, FIXTURES / path.stem)))
        write_fixture(FEWSTEP_DIR / "dino-dualscale-pd8.onnx", FIXTURES / "dino-dualscale-pd8")
        return 0
    for ds in args.datasets:
        for seed in args.seeds:
            if args.command == "teacher-eval":
                rows = teacher_eval(ds, [seed])
                (RUNS / f"teacher-eval-{ds}-seed{seed}.json").write_text(json.dumps(rows, indent=1))
            elif args.command == "base":
                stage_base(ds, seed, args.steps, args.tag, args.init)
            elif args.command == "pdt":
                stage_pdt(ds, seed, args.pd_start, args.pd_end, args.pd_steps, args.tag, args.pd_lr)
            elif args.command == "other":
                other_dataset(ds, seed, args.pd_steps)
            elif args.command == "eval":
                eval_all(ds, seed)
            elif args.command == "export":
                log(str(export_teacher_plus(ds, seed)))
            elif args.command == "teacher-plus":
                stage_teacher_plus(ds, seed, args.steps, args.tag, args.pd_lr, args.batch)
            elif args.command == "td":
                stage_td(ds, seed, args.ns, args.steps, args.tag, args.pd_lr, args.base)
            elif args.command == "tdc":
                log(str(stage_tdc(ds, seed, args.grid, args.steps, args.sub_steps, args.cache, args.tag, args.pd_lr,
                                  args.batch, args.teacher)))
            elif args.command == "export-tdc":
                log(str(export_tdc(ds, seed, len(args.grid), args.tag, args.weights, args.ship)))
            elif args.command == "dm":
                log(str(stage_dm(ds, seed, args.grid, args.steps, args.init_onnx, args.tag, args.pd_lr, args.dm_batch,
                                 args.dm_data_batch, args.dm_bandwidths, args.reg_weight, args.batch, args.sub_steps,
                                 args.cache, args.divergence, args.ckpt_every)))
            elif args.command == "export-dm":
                log(str(export_tdc(ds, seed, len(args.grid), args.tag, args.weights, args.ship, method="dm")))
            elif args.command == "eval-dm":
                eval_dm(ds, seed, len(args.grid), args.tag, args.weights, init_onnx=args.init_onnx)
            elif args.command == "cd":
                stage_cd(ds, seed, args.pd_start, args.steps, args.tag, args.pd_lr)
            elif args.command == "pd":
                stage_pd(ds, seed, args.pd_start, args.pd_end, args.pd_steps, args.rho, args.tag,
                         args.base_tag, args.pd_lr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
