#!/usr/bin/env python
"""A 4-step landscape model (issue 9, item 6): the shipped dual-scale model distilled onto a fixed
4-step DDIM grid, so a kiosk paints at 4 NFE with the quality of the 10-step list.

    nice -n 10 python models/train/image_fewstep.py trajectories   # teacher states on the grid (cached)
    nice -n 10 python models/train/image_fewstep.py train
    nice -n 10 python models/train/image_fewstep.py eval           # FD of student and teacher on the grid
    python models/train/image_fewstep.py export                    # -> models/landscape-dualscale-fewstep.*
    python models/train/image_fewstep.py fixture                   # -> tests/fixtures/fewstep/ (parity tests
                                                                    #    of this model and the shipped one)

Method (direct trajectory distillation; Luhman & Luhman 2021, the one-phase form of progressive
distillation, Salimans & Ho 2022). The teacher is the shipped seed-0 model with its manifest's
sampler: UniPC over TEACHER_LIST (10 NFE, FD 3.11 from the runtime against 7.32 for 100-step
DDPM). `trajectories` runs it from N_TRAJ noise draws and keeps its state at each timestep of GRID
(GRID[0] = 999 is the noise itself) and its final image. The student starts from the teacher's
weights; one training example is a state x at GRID[k] and the teacher's state at GRID[k+1] (or its
final image, after the last grid point). The student's target is the x0 for which one DDIM step
from x lands exactly on the teacher's next state, expressed as the v the network predicts, so the
loss is the recipe's own v-MSE: x_next = a_n x0 + s_n (x - a_k x0) / s_k solved for x0, then
v = (a_k x - x0) / s_k (a = sqrt(abar), s = sqrt(1 - abar)). Sampling the student is plain DDIM
(eta 0) over GRID, which the runtime runs from the manifest's `sampler` block.

Everything lands under models/train/runs/images/landscape-dualscale-fewstep/ (git-ignored) and,
for `export`, models/landscape-dualscale-fewstep.{onnx,json}. Resumable like make_images.py:
trajectories are written in chunks, training checkpoints every 250 steps.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_images  # noqa: E402

TEACHER_LIST = make_images.SAMPLER["dualscale"]["timesteps"]      # the shipped model's default
GRID = [999, 965, 802, 164]
N_TRAJ = 12_000
CHUNK = 500
TRAJ_SEED = 30_000          # generator seeds 30000 + chunk; evaluation uses 10000 + seed
STEPS = 4_000
RUN = make_images.RUNS / "landscape-dualscale-fewstep"
NAME = "landscape-dualscale-fewstep"
log = make_images.log


def train_config():
    import image_diffusion
    return replace(image_diffusion.ImageTrainConfig(), steps=STEPS, lr=1e-4, warmup=100)


def stage_trajectories() -> np.ndarray:
    """float32 [N_TRAJ, len(GRID) + 1, 3, 32, 32]: the teacher's states on GRID and its final image."""
    torch = make_images._torch_setup()
    import image_diffusion
    import image_samplers
    path = RUN / f"trajectories-n{N_TRAJ}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    teacher, _ = image_diffusion.load_ema(make_images.RUNS / "landscape-dualscale-seed0", "dualscale")
    parts = RUN / "trajectories"
    parts.mkdir(parents=True, exist_ok=True)
    for c in range(N_TRAJ // CHUNK):
        part = parts / f"chunk{c:03d}.npy"
        if part.exists():
            continue
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(TRAJ_SEED + c)
        x_T = torch.randn(CHUNK, 3, 32, 32, generator=gen).numpy()
        record = dict.fromkeys(GRID[1:])
        final = image_samplers.unipc(image_samplers.TorchModel(teacher), TEACHER_LIST, x_T, gen, record=record)
        states = np.stack([x_T] + [record[t] for t in GRID[1:]] + [final], axis=1).astype(np.float32)
        make_images.atomic_save_npy(part, states)
        log(f"trajectories: chunk {c + 1}/{N_TRAJ // CHUNK} ({time.perf_counter() - t0:.0f}s)")
    arr = np.concatenate([np.load(parts / f"chunk{c:03d}.npy") for c in range(N_TRAJ // CHUNK)])
    make_images.atomic_save_npy(path, arr)
    return arr


def _levels(ts):
    import image_diffusion
    ac = image_diffusion.CosineSchedule().alphas_cumprod.double()
    a = [math.sqrt(float(ac[t])) for t in ts]
    return a, [math.sqrt(1 - x * x) for x in a]


def distillation_loss(model, batch, g, schedule):
    """v-MSE against the v whose DDIM step from GRID[k] lands on the teacher's next state."""
    import torch
    from torch.nn import functional as F

    import image_nets
    n, k_max = batch.shape[0], len(GRID)
    k = torch.randint(0, k_max, (n,), generator=g)
    rows = torch.arange(n)
    x, nxt = batch[rows, k].double(), batch[rows, k + 1].double()
    a, s = (torch.tensor(v, dtype=torch.float64) for v in _levels(GRID))
    a_n = torch.cat([a[1:], torch.ones(1, dtype=torch.float64)])     # after the last point: clean data
    s_n = torch.cat([s[1:], torch.zeros(1, dtype=torch.float64)])
    ak, sk, an, sn = (v[k].view(n, 1, 1, 1) for v in (a, s, a_n, s_n))
    x0 = (nxt - sn / sk * x) / (an - sn * ak / sk)
    v = (ak * x - x0) / sk
    t = torch.tensor(GRID, dtype=torch.float32)[k]
    return F.mse_loss(image_nets.output_of(model, x.float(), t), v.float())


def stage_train() -> dict:
    torch = make_images._torch_setup()
    import image_diffusion
    data = torch.from_numpy(np.ascontiguousarray(stage_trajectories()))
    teacher = torch.load(make_images.RUNS / "landscape-dualscale-seed0" / "ema.pt", weights_only=True)
    cfg = train_config()
    log(f"training {RUN.name}: {cfg.steps} steps, batch {cfg.batch_size}, {len(data)} trajectories")
    return image_diffusion.train(RUN, "dualscale", 0, data, cfg, image_diffusion.CosineSchedule(), log=log,
                                 loss_fn=distillation_loss, init=("landscape-dualscale-seed0", teacher))


def sample_grid(model, x_T: np.ndarray) -> np.ndarray:
    import image_samplers
    return image_samplers.ddim(image_samplers.TorchModel(model), GRID, x_T, None)


def stage_eval(partial: bool = False) -> dict:
    """FD (image_eval's feature space, 2,000 images, x_T of evaluation seed 0) of the student and
    of the teacher with DDIM on GRID -> RUN/result.json."""
    torch = make_images._torch_setup()
    import image_diffusion
    import image_eval
    import landscapes
    student, steps_done = image_diffusion.load_ema(RUN, "dualscale", partial_ok=partial)
    teacher, _ = image_diffusion.load_ema(make_images.RUNS / "landscape-dualscale-seed0", "dualscale")
    train = make_images.images(0, make_images.N_TRAIN)
    ref = image_eval.features(landscapes.to_model(make_images.images(1, make_images.N_HELDOUT)), train)
    x_T = torch.randn(image_eval.N_FD, 3, 32, 32, generator=torch.Generator().manual_seed(10_000)).numpy()
    result = {"grid": GRID, "steps_trained": steps_done, "fd": {}}
    for name, model in (("student-ddim-grid", student), ("teacher-ddim-grid", teacher)):
        x = sample_grid(model, x_T)
        result["fd"][name] = image_eval.frechet(image_eval.features(x, train), ref)
        log(f"{name} ({steps_done} steps): FD {result['fd'][name]:.3f}")
        if name.startswith("student"):
            landscapes.write_grid(make_images.REPORT / f"{NAME}-seed0-ddim-4.png",
                                  landscapes.from_model(x)[:64], cols=8, scale=3)
    make_images.atomic_write_json(RUN / ("result.json" if not partial else f"result-partial{steps_done}.json"),
                                  result)
    return result


def stage_export() -> dict:
    """The finished student -> models/landscape-dualscale-fewstep.onnx + .json (a manifest whose
    `sampler` block is DDIM over GRID, with the FD of `eval`) and its fp16 copy."""
    make_images._torch_setup()
    import fp16
    import image_diffusion
    result = json.loads((RUN / "result.json").read_text())
    student, steps_done = image_diffusion.load_ema(RUN, "dualscale")
    cfg = train_config()
    fd, teacher_fd = result["fd"]["student-ddim-grid"], result["fd"]["teacher-ddim-grid"]
    extra = {
        "name": NAME,
        "training": {"method": "trajectory distillation of landscape-dualscale (models/train/image_fewstep.py)",
                     "teacher": "landscape-dualscale.onnx (seed 0)",
                     "teacher_sampler": {"type": "unipc", "timesteps": TEACHER_LIST},
                     "trajectories": N_TRAJ, "steps": cfg.steps, "steps_done": steps_done,
                     "batch_size": cfg.batch_size, "lr": cfg.lr, "warmup": cfg.warmup, "ema_decay": cfg.ema_decay},
        "sampler": {"type": "ddim", "timesteps": GRID,
                    "note": f"DDIM (eta 0) over the distillation grid, 4 NFE: FD {fd:.2f} (recipe, 2,000 images) "
                            f"against {teacher_fd:.1f} for the teacher on the same grid; the step after the last "
                            "listed timestep lands on clean data."},
    }
    onnx_path = make_images.MODELS / f"{NAME}.onnx"
    man = make_images.export_model(student, "dualscale", cfg, steps_done, onnx_path, extra)
    fp16.main(str(onnx_path))
    return man


def write_fixture(onnx_path: Path, out_dir: Path, count: int = 4, seed: int = 0) -> dict:
    """Parity fixture for the runtime's default run of an image model with a manifest `sampler`
    block: the ONNX file through onnxruntime (image_samplers.Model) and image_samplers' port of
    that sampler, from unit noise. Writes noise.npy [count,3,32,32] (feed with --init-noise),
    out.npy (the final samples, float32, before the PNG's 8-bit rounding) and expected.json."""
    import image_samplers
    import torch
    man = json.loads(onnx_path.with_suffix(".json").read_text())
    kind, ts = man["sampler"]["type"], man["sampler"]["timesteps"]
    fn, ts, n = image_samplers.parse(f"{kind}:{','.join(map(str, ts))}:{len(ts)}")
    model = image_samplers.Model(onnx_path)
    noise = torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).numpy()
    out = fn(model, ts, noise.copy(), None).astype(np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "noise.npy", noise)
    np.save(out_dir / "out.npy", out)
    info = {"model": onnx_path.name, "sha256": man["sha256"], "kind": "image", "sampler": kind,
            "timesteps": [int(t) for t in ts], "count": count, "seed": seed, "nfe": model.nfe,
            "algorithm": f"models/train/image_samplers.py {kind}, v prediction, f64 abar, f32 state; "
                         "the step after the last listed timestep lands on clean data",
            "tolerance_abs": 1e-4}
    (out_dir / "expected.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["trajectories", "train", "eval", "export", "fixture"])
    ap.add_argument("--partial", action="store_true", help="evaluate the last checkpoint's EMA")
    args = ap.parse_args(argv)
    if args.command == "trajectories":
        stage_trajectories()
    elif args.command == "train":
        stage_train()
    elif args.command == "eval":
        print(json.dumps(stage_eval(args.partial), indent=2))
    elif args.command == "export":
        stage_export()
    elif args.command == "fixture":
        for name in ("landscape-dualscale", NAME):      # the shipped model's 10-step default too
            info = write_fixture(make_images.MODELS / f"{name}.onnx",
                                 make_images.REPO / "tests" / "fixtures" / "fewstep" / name)
            print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
