"""DDPM schedule, resumable training loop and ancestral sampling (tiny-diffusion template).

Training is deterministic and resumable: the data order and every random draw of step s
come from generators seeded by (seed, s) / (seed, epoch), so a run killed and resumed from a
checkpoint gives bit-identical weights to an uninterrupted one (same machine, same library
versions, one thread). Nothing here exports or evaluates.
"""
from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import CosineAnnealingLR

import nets


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 10_000
    batch_size: int = 256
    lr: float = 3e-4
    ema_decay: float = 0.995
    ema_every: int = 10
    grad_clip: float = 0.5
    # ema_pytorch defaults that the template's `EMA(model, beta=0.995, update_every=10)` used:
    ema_update_after_step: int = 100
    ema_inv_gamma: float = 1.0
    ema_power: float = 2 / 3
    ckpt_every: int = 500


@dataclass(frozen=True)
class Schedule:
    """Linear-beta DDPM schedule, float32 tensors computed exactly as the template does."""

    num_timesteps: int = 100
    beta_start: float = 0.0001
    beta_end: float = 0.02

    def __post_init__(self):
        betas = torch.linspace(self.beta_start, self.beta_end, self.num_timesteps, dtype=torch.float32)
        alphas = 1.0 - betas
        ac = torch.cumprod(alphas, dim=0)
        ac_prev = F.pad(ac[:-1], (1, 0), value=1.0)
        tensors = dict(
            betas=betas,
            alphas=alphas,
            alphas_cumprod=ac,
            alphas_cumprod_prev=ac_prev,
            sqrt_ac=ac ** 0.5,
            sqrt_one_minus_ac=(1 - ac) ** 0.5,
            sqrt_inv_ac=torch.sqrt(1 / ac),
            sqrt_inv_ac_minus_one=torch.sqrt(1 / ac - 1),
            coef1=betas * torch.sqrt(ac_prev) / (1.0 - ac),
            coef2=(1.0 - ac_prev) * torch.sqrt(alphas) / (1.0 - ac),
            variance=(betas * (1.0 - ac_prev) / (1.0 - ac)).clip(1e-20),
        )
        for k, v in tensors.items():
            object.__setattr__(self, k, v)

    def add_noise(self, x0, noise, t):
        return self.sqrt_ac[t].reshape(-1, 1) * x0 + self.sqrt_one_minus_ac[t].reshape(-1, 1) * noise

    def step(self, eps, t: int, x, gen: torch.Generator):
        """One ancestral step x_t -> x_{t-1}: posterior mean, beta-tilde variance, no noise at t=0."""
        x0 = self.sqrt_inv_ac[t] * x - self.sqrt_inv_ac_minus_one[t] * eps
        mean = self.coef1[t] * x0 + self.coef2[t] * x
        if t > 0:
            mean = mean + self.variance[t] ** 0.5 * torch.randn(x.shape, generator=gen)
        return mean

    def manifest(self) -> dict:
        return {
            "num_train_timesteps": self.num_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "beta_schedule": "linear",
            # The runtime's default spacing for these models: best or within 0.03 bits of the
            # best at 10 / 20 / 50 UniPC steps on all four data sets (models/RUNTIME-KL.md).
            "timestep_spacing": "trailing",
        }


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _gen(seed: int, stream: int, index: int) -> torch.Generator:
    """Independent generator for (run seed, stream, index); streams: 0 = step draws, 1 = epoch order."""
    return torch.Generator().manual_seed(((seed * 4 + stream) << 40) + index)


def _ema_decay(cfg: TrainConfig, count: int) -> float:
    """ema_pytorch's warm-up: 0 until update_after_step, then 1-(1+e/inv_gamma)^-power capped at beta."""
    epoch = max(count - cfg.ema_update_after_step - 1, 0)
    if epoch <= 0:
        return 0.0
    value = 1 - (1 + epoch / cfg.ema_inv_gamma) ** -cfg.ema_power
    return min(max(value, 0.0), cfg.ema_decay)


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, cfg: TrainConfig, step: int) -> None:
    """ema_pytorch `EMA.update()` called once after optimizer step number `step` (0-based)."""
    if step % cfg.ema_every != 0:
        return
    if step <= cfg.ema_update_after_step:
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.copy_(pm)
        return
    decay = _ema_decay(cfg, step + 1)
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1.0 - decay)


def train(
    run_dir: Path,
    arch: str,
    seed: int,
    data: np.ndarray,
    cfg: TrainConfig,
    schedule: Schedule,
    log: Callable[[str], None] = print,
    stop_at: int | None = None,
) -> dict:
    """Train (or resume, or skip if done) one run; returns the run's training summary.

    Files in run_dir: ckpt.pt (every cfg.ckpt_every steps, atomic), ema.pt (final EMA weights)
    and train.json (summary) once finished. `stop_at` (tests only) abandons the run just before
    that step without saving, as a kill would.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    summary_path = run_dir / "train.json"
    if summary_path.exists() and (run_dir / "ema.pt").exists():
        return json.loads(summary_path.read_text())

    torch.manual_seed(seed)
    model = nets.build(arch)
    ema = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    sched = CosineAnnealingLR(opt, T_max=cfg.steps)
    step, wall, losses, resumed_from = 0, 0.0, [], []
    ckpt_path = run_dir / "ckpt.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        if ck["config"] != asdict(cfg) or ck["arch"] != arch or ck["seed"] != seed:
            raise RuntimeError(f"{ckpt_path} was written with another config; delete {run_dir} to restart")
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        step, wall, losses = ck["step"], ck["wall"], ck["losses"]
        resumed_from = ck.get("resumed_from", []) + [step]
        log(f"resuming {run_dir.name} at step {step}")

    x_all = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    n = x_all.shape[0]
    per_epoch = -(-n // cfg.batch_size)  # DataLoader(shuffle=True) without drop_last
    perm_epoch, perm = -1, None
    model.train()
    t0 = time.perf_counter()
    while step < cfg.steps:
        if step == stop_at:
            return {}
        epoch, k = divmod(step, per_epoch)
        if epoch != perm_epoch:
            perm, perm_epoch = torch.randperm(n, generator=_gen(seed, 1, epoch)), epoch
        batch = x_all[perm[k * cfg.batch_size:(k + 1) * cfg.batch_size]]
        g = _gen(seed, 0, step)
        noise = torch.randn(batch.shape, generator=g)
        t = torch.randint(0, schedule.num_timesteps, (batch.shape[0],), generator=g)
        noisy = schedule.add_noise(batch, noise, t)
        loss = F.mse_loss(nets.eps_of(model, noisy, t.to(torch.float32)), noise)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad()
        _ema_update(ema, model, cfg, step)
        sched.step()
        losses.append(loss.item())
        step += 1
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            now = time.perf_counter()
            wall += now - t0
            t0 = now
            _atomic_torch_save(
                dict(model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(),
                     sched=sched.state_dict(), step=step, wall=wall, losses=losses,
                     config=asdict(cfg), arch=arch, seed=seed, resumed_from=resumed_from),
                ckpt_path,
            )
            if step % 2500 == 0 or step == cfg.steps:
                log(f"{run_dir.name}: step {step}/{cfg.steps} loss(last 500) "
                    f"{np.mean(losses[-500:]):.4f} train {wall:.0f}s")
    _atomic_torch_save(ema.state_dict(), run_dir / "ema.pt")
    summary = {
        "arch": arch,
        "seed": seed,
        "steps": cfg.steps,
        "train_wall_s": wall,
        "steps_per_s": cfg.steps / wall,
        "resumed_at_steps": resumed_from,
        "final_loss_last500": float(np.mean(losses[-500:])),
        "parameters": nets.count_parameters(model),
        "torch_threads": torch.get_num_threads(),
    }
    tmp = summary_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, summary_path)
    np.save(run_dir / "losses.npy", np.asarray(losses, dtype=np.float32))
    return summary


def load_ema(run_dir: Path, arch: str) -> nn.Module:
    model = nets.build(arch)
    model.load_state_dict(torch.load(run_dir / "ema.pt", weights_only=True))
    model.eval()
    return model


@torch.no_grad()
def sample(model: nn.Module, schedule: Schedule, x_T: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Full ancestral DDPM from x_T (t = T-1 .. 0) with the EMA model."""
    x = x_T.to(torch.float32)
    n = x.shape[0]
    for t in range(schedule.num_timesteps - 1, -1, -1):
        eps = nets.eps_of(model, x, torch.full((n,), float(t), dtype=torch.float32))
        x = schedule.step(eps, t, x, gen)
    return x


@torch.no_grad()
def gate_per_timestep(model: nn.Module, schedule: Schedule) -> np.ndarray:
    """[T,2] gate weights (global, local) for t = 0..T-1 (the gate depends on t only)."""
    t = torch.arange(schedule.num_timesteps, dtype=torch.float32)
    _, w = model(torch.zeros(len(t), 2), t)
    return w.numpy().astype(np.float64)


@torch.no_grad()
def branch_contributions(model: nn.Module, schedule: Schedule, data: np.ndarray, n: int = 2000,
                         seed: int = 0) -> np.ndarray:
    """[T] share of the global branch in the dual-scale output, per timestep.

    The gate weight alone says little (a branch can scale its own output up), so this measures
    E||w_g g(x_t)|| / (E||w_g g(x_t)|| + E||w_l l(x_t)||) on n noisy data points x_t ~ q(x_t | x_0).
    """
    g = torch.Generator().manual_seed(seed)
    x0 = torch.from_numpy(np.ascontiguousarray(data[:n], dtype=np.float32))
    share = np.zeros(schedule.num_timesteps)
    for t in range(schedule.num_timesteps):
        tt = torch.full((len(x0),), t, dtype=torch.long)
        xt = schedule.add_noise(x0, torch.randn(x0.shape, generator=g), tt)
        t_emb = model.t_emb(tt.to(torch.float32))
        w = model.gate(t_emb)
        glob = (w[:, 0:1] * model.global_branch(xt, t_emb)).norm(dim=1).mean()
        loc = (w[:, 1:2] * model.local_branch(model.upscale(xt), t_emb)).norm(dim=1).mean()
        share[t] = float(glob / (glob + loc))
    return share
