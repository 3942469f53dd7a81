"""Cosine-schedule diffusion for the 32x32 image models: schedule, resumable training, samplers.

Schedule: diffusers `squaredcos_cap_v2` (Nichol & Dhariwal 2021, improved DDPM) with T = 1000:
abar(t) = cos^2(((t/T) + 0.008) / 1.008 * pi/2), betas_t = min(1 - abar(t+1)/abar(t), 0.999)
computed in float64 and stored as float32, then alphas_cumprod = cumprod(1 - betas) in float32,
exactly as diffusers' `betas_for_alpha_bar` does. abar at t = 999 is 2.5e-9 (pure noise, so the
sampler starts from N(0, I) with nothing to correct: no data statistics are needed).

Prediction type `v_prediction` (Salimans & Ho 2022): the network predicts
v = sqrt(abar) eps - sqrt(1 - abar) x0, so x0 = sqrt(abar) x_t - sqrt(1 - abar) v and
eps = sqrt(1 - abar) x_t + sqrt(abar) v. Why not epsilon: near t = 999 the epsilon form
x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) multiplies the network's error by 1/sqrt(abar),
up to 2e4, which ruins few-step samplers that start there (Lin et al. 2023); v keeps every
conversion bounded by 1. It also suits the dual-scale split: at high noise v ~ -x0 (the coarse
picture, the global branch's job), at low noise v ~ eps (pixel detail, the local branch's).

Training is deterministic and resumable as in `diffusion.train` (same generators per
(seed, step) and (seed, epoch), same EMA rule), with an atomic checkpoint every `ckpt_every`
steps. Nothing here exports or writes outside the run directory.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import LambdaLR

import diffusion
import image_nets


@dataclass(frozen=True)
class ImageTrainConfig:
    steps: int = 10_000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    ema_every: int = 1
    grad_clip: float = 1.0
    ema_update_after_step: int = 100
    ema_inv_gamma: float = 1.0
    ema_power: float = 2 / 3
    ckpt_every: int = 250


@dataclass(frozen=True)
class CosineSchedule:
    num_timesteps: int = 1000
    prediction_type: str = "v_prediction"   # or "epsilon"

    def __post_init__(self):
        T = self.num_timesteps

        def abar(s):
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = torch.tensor([min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)],
                             dtype=torch.float32)
        alphas = 1.0 - betas
        ac = torch.cumprod(alphas, dim=0)
        ac_prev = F.pad(ac[:-1], (1, 0), value=1.0)
        for k, v in dict(betas=betas, alphas=alphas, alphas_cumprod=ac, alphas_cumprod_prev=ac_prev,
                         sqrt_ac=ac.sqrt(), sqrt_1mac=(1 - ac).sqrt()).items():
            object.__setattr__(self, k, v)

    @staticmethod
    def _b(v: torch.Tensor) -> torch.Tensor:
        return v.reshape(-1, 1, 1, 1)

    def add_noise(self, x0, noise, t):
        return self._b(self.sqrt_ac[t]) * x0 + self._b(self.sqrt_1mac[t]) * noise

    def target(self, x0, noise, t):
        if self.prediction_type == "epsilon":
            return noise
        return self._b(self.sqrt_ac[t]) * noise - self._b(self.sqrt_1mac[t]) * x0

    def x0_eps(self, out, x, t: int):
        """(x0_hat, eps_hat) from the network output at integer timestep t (float64 coefficients)."""
        a = float(self.alphas_cumprod[t])
        sa, s1 = math.sqrt(a), math.sqrt(1 - a)
        if self.prediction_type == "epsilon":
            return (x - s1 * out) / sa, out
        return sa * x - s1 * out, s1 * x + sa * out

    def manifest(self) -> dict:
        # beta_start/beta_end are ignored by squaredcos_cap_v2 but required by the manifest reader;
        # the values are diffusers' class defaults.
        return {"num_train_timesteps": self.num_timesteps, "beta_start": 0.0001, "beta_end": 0.02,
                "beta_schedule": "squaredcos_cap_v2"}


def _lr_lambda(cfg: ImageTrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        p = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))
    return f


def denoising_loss(model: nn.Module, batch: torch.Tensor, g: torch.Generator, schedule: CosineSchedule) -> torch.Tensor:
    """The recipe's loss: MSE between the output and the schedule's target at a uniform timestep."""
    noise = torch.randn(batch.shape, generator=g)
    t = torch.randint(0, schedule.num_timesteps, (batch.shape[0],), generator=g)
    noisy = schedule.add_noise(batch, noise, t)
    return F.mse_loss(image_nets.output_of(model, noisy, t.to(torch.float32)), schedule.target(batch, noise, t))


def train(run_dir: Path, arch: str, seed: int, data: torch.Tensor, cfg: ImageTrainConfig,
          schedule: CosineSchedule, log: Callable[[str], None] = print, stop_at: int | None = None,
          loss_fn: Callable = denoising_loss, init: tuple[str, dict] | None = None) -> dict:
    """Train (or resume, or skip if done) one image run; `data` float32 [n,3,32,32] in [-1,1].

    Files in run_dir: ckpt.pt (every cfg.ckpt_every steps, atomic; holds the EMA weights too, so a
    partial run can be exported as a preview), ema.pt and train.json once finished. `stop_at`
    (tests only) abandons the run just before that step without saving, as a kill would.
    `loss_fn(model, batch, generator, schedule)` is the loss of one batch of rows of `data` (any
    trailing shape); `init` = (name, state dict) starts from trained weights instead of the seed's.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    summary_path = run_dir / "train.json"
    if summary_path.exists() and (run_dir / "ema.pt").exists():
        return json.loads(summary_path.read_text())

    torch.manual_seed(seed)
    model = image_nets.build(arch)
    if init is not None:
        model.load_state_dict(init[1])
    ema = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = LambdaLR(opt, _lr_lambda(cfg))
    step, wall, losses, resumed_from = 0, 0.0, [], []
    ckpt_path = run_dir / "ckpt.pt"
    meta = dict(config=asdict(cfg), arch=arch, seed=seed, schedule=asdict(schedule))
    if init is not None:
        meta["init"] = init[0]
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        if any(ck.get(k) != v for k, v in meta.items()):
            raise RuntimeError(f"{ckpt_path} was written with another config; delete {run_dir} to restart")
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        step, wall, losses = ck["step"], ck["wall"], ck["losses"]
        resumed_from = ck.get("resumed_from", []) + [step]
        log(f"resuming {run_dir.name} at step {step}")

    n = data.shape[0]
    per_epoch = -(-n // cfg.batch_size)
    perm_epoch, perm = -1, None
    ema_cfg = diffusion.TrainConfig(ema_decay=cfg.ema_decay, ema_every=cfg.ema_every,
                                    ema_update_after_step=cfg.ema_update_after_step,
                                    ema_inv_gamma=cfg.ema_inv_gamma, ema_power=cfg.ema_power)
    model.train()
    t0 = time.perf_counter()
    while step < cfg.steps:
        if step == stop_at:
            return {}
        epoch, k = divmod(step, per_epoch)
        if epoch != perm_epoch:
            perm, perm_epoch = torch.randperm(n, generator=diffusion._gen(seed, 1, epoch)), epoch
        batch = data[perm[k * cfg.batch_size:(k + 1) * cfg.batch_size]]
        loss = loss_fn(model, batch, diffusion._gen(seed, 0, step), schedule)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad()
        diffusion._ema_update(ema, model, ema_cfg, step)
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
                     resumed_from=resumed_from, **meta),
                ckpt_path,
            )
            log(f"{run_dir.name}: step {step}/{cfg.steps} loss(last {cfg.ckpt_every}) "
                f"{np.mean(losses[-cfg.ckpt_every:]):.4f} train {wall:.0f}s ({step / wall:.2f} steps/s)")
    diffusion._atomic_torch_save(ema.state_dict(), run_dir / "ema.pt")
    summary = {
        "arch": arch, "seed": seed, "steps": cfg.steps, "train_wall_s": wall,
        "steps_per_s": cfg.steps / wall, "resumed_at_steps": resumed_from,
        "final_loss_last1000": float(np.mean(losses[-1000:])),
        "parameters": image_nets.count_parameters(model), "torch_threads": torch.get_num_threads(),
    }
    tmp = summary_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, summary_path)
    np.save(run_dir / "losses.npy", np.asarray(losses, dtype=np.float32))
    return summary


def load_ema(run_dir: Path, arch: str, partial_ok: bool = False) -> tuple[nn.Module, int]:
    """EMA model of a run and its step count; with partial_ok, the EMA of the last checkpoint."""
    model = image_nets.build(arch)
    if (run_dir / "ema.pt").exists():
        model.load_state_dict(torch.load(run_dir / "ema.pt", weights_only=True))
        steps = json.loads((run_dir / "train.json").read_text())["steps"]
    elif partial_ok and (run_dir / "ckpt.pt").exists():
        ck = torch.load(run_dir / "ckpt.pt", weights_only=False)
        model.load_state_dict(ck["ema"])
        steps = ck["step"]
    else:
        raise FileNotFoundError(f"{run_dir}: no finished EMA weights")
    model.eval()
    return model, steps


# ---------------------------------------------------------------- samplers

def timesteps(schedule: CosineSchedule, steps: int) -> list[int]:
    """`trailing` spacing (Lin et al. 2023): starts at t = T-1, where abar ~ 0 matches N(0, I)."""
    T = schedule.num_timesteps
    return [int(round(T - 1 - i * T / steps)) for i in range(steps)]


@torch.no_grad()
def sample_ddpm(model, schedule: CosineSchedule, x_T: torch.Tensor, gen: torch.Generator, steps: int | None = None,
                batch: int = 500) -> torch.Tensor:
    """Ancestral DDPM (posterior mean, beta-tilde variance, no noise at the last step) over the
    `trailing` timesteps (all T when steps is None). Over a subset the step uses the betas of the
    skipped interval (diffusers DDPMScheduler with num_inference_steps)."""
    ts = timesteps(schedule, steps or schedule.num_timesteps)
    ac = schedule.alphas_cumprod.double()
    outs = []
    for i0 in range(0, len(x_T), batch):
        x = x_T[i0:i0 + batch].to(torch.float32)
        n = x.shape[0]
        for i, t in enumerate(ts):
            prev = ts[i + 1] if i + 1 < len(ts) else -1
            a_t = float(ac[t])
            a_p = float(ac[prev]) if prev >= 0 else 1.0
            beta = 1 - a_t / a_p
            out = image_nets.output_of(model, x, torch.full((n,), float(t)))
            x0, _ = schedule.x0_eps(out.double(), x.double(), t)
            mean = (math.sqrt(a_p) * beta / (1 - a_t)) * x0 + (math.sqrt(1 - beta) * (1 - a_p) / (1 - a_t)) * x.double()
            if prev >= 0:
                var = beta * (1 - a_p) / (1 - a_t)
                mean = mean + math.sqrt(var) * torch.randn(x.shape, generator=gen, dtype=torch.float64)
            x = mean.to(torch.float32)
        outs.append(x)
    return torch.cat(outs)


@torch.no_grad()
def sample_ddim(model, schedule: CosineSchedule, x_T: torch.Tensor, steps: int, batch: int = 500) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) over `trailing` timesteps, ending at x0_hat of t = ts[-1]."""
    ts = timesteps(schedule, steps)
    ac = schedule.alphas_cumprod.double()
    outs = []
    for i0 in range(0, len(x_T), batch):
        x = x_T[i0:i0 + batch].to(torch.float32)
        n = x.shape[0]
        for i, t in enumerate(ts):
            out = image_nets.output_of(model, x, torch.full((n,), float(t)))
            x0, eps = schedule.x0_eps(out.double(), x.double(), t)
            a_p = float(ac[ts[i + 1]]) if i + 1 < len(ts) else 1.0
            x = (math.sqrt(a_p) * x0 + math.sqrt(1 - a_p) * eps).to(torch.float32)
        outs.append(x)
    return torch.cat(outs)


@torch.no_grad()
def gate_per_timestep(model, schedule: CosineSchedule) -> np.ndarray:
    t = torch.arange(schedule.num_timesteps, dtype=torch.float32)
    return model.gate(model.t_emb(t)).numpy().astype(np.float64)
