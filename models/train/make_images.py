#!/usr/bin/env python
"""Makes the 32x32 landscape image models: data, training, export, evaluation. Resumable.

    nice -n 10 python models/train/make_images.py data                         # data set + grid PNG
    nice -n 10 python models/train/make_images.py train --arch dualscale --seed 0
    python models/train/make_images.py export --arch dualscale [--partial] [--force]  # seed 0 -> models/
    nice -n 10 python models/train/make_images.py eval --arch dualscale --seed 0
    python models/train/make_images.py table                                   # FD by seed, Markdown
    sh models/train/run_images.sh                                              # all of it, in order

Each stage is its own process, so `run_images.sh` (the background chain) picks up code that
changed between stages. Training checkpoints atomically every 250 steps and a rerun resumes;
a finished stage is skipped. One process per run at a time (lock file `runs/images/.lock-{arch}-seed{N}`,
`.lock` for the data stages), so the two architectures can train side by side; one torch thread
each, niceness >= 10. Writes under models/train/runs/images/ (git-ignored), models/report/
and, for `export`, models/landscape-{arch}.onnx + .json.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import atomic  # noqa: E402
import landscapes  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
RUNS = MODELS / "train" / "runs" / "images"
REPORT = MODELS / "report"
N_TRAIN = 40_000          # training images, set seed 0
N_HELDOUT = 2_000         # held-out images, set seed 1 (the Fréchet reference)
DATASET = "landscape"
# sized to <= 90 minutes per run: 2.6-3.8 steps/s measured at batch 64 on one niced core, shared
STEPS = {"dualscale": 14_000, "baseline": 14_000}


# The sampler `dualscale generate` runs by default (the manifest's `sampler` block): chosen by
# image_samplers.py (models/report/IMAGE-SAMPLERS-DRAFT.md) for the dual-scale seed-0 model.
SAMPLER = {"dualscale": {
    "type": "unipc", "timesteps": [999, 991, 983, 965, 921, 802, 507, 164, 27, 0],
    "note": "UniPC (bh2, order 2) over the listed timesteps (Karras-style spacing in sigma, rho 7, sigma_max 80; "
            "models/report/IMAGE-SAMPLERS-DRAFT.md): FD 3.11 from the runtime against 7.32 for 100-step ancestral "
            "DDPM; the step after the last listed timestep lands on clean data."}}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


atomic_write_bytes = atomic.write_bytes


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    import io
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


def images(seed: int, n: int, root: Path = RUNS) -> np.ndarray:
    """uint8 [n,32,32,3] of set `seed`, cached under runs/images/data/ (regenerated if absent)."""
    path = root / "data" / f"landscapes-seed{seed}-n{n}.npy"
    if path.exists():
        return np.load(path)
    t0 = time.perf_counter()
    arr = landscapes.make(n, seed=seed)
    atomic_save_npy(path, arr)
    log(f"wrote {path} ({n} images, {time.perf_counter() - t0:.0f}s)")
    return arr


def stage_data(root: Path = RUNS) -> None:
    train = images(0, N_TRAIN, root)
    held = images(1, N_HELDOUT, root)
    if root == RUNS:
        landscapes.write_grid(REPORT / "landscapes-data.png", train[:128], cols=16, scale=3)
    log(f"data: train {train.shape}, held-out {held.shape}")


def _torch_setup():
    import torch
    if os.nice(0) < 10:
        os.nice(10 - os.nice(0))
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    return torch


def train_config(arch: str, steps: int | None = None):
    import image_diffusion
    cfg = image_diffusion.ImageTrainConfig(steps=steps or STEPS[arch])
    return cfg


def stage_train(arch: str, seed: int, steps: int | None, root: Path = RUNS) -> dict:
    torch = _torch_setup()
    import image_diffusion
    data = torch.from_numpy(landscapes.to_model(images(0, N_TRAIN)))  # data always from RUNS
    cfg = train_config(arch, steps)
    run_dir = root / f"{DATASET}-{arch}-seed{seed}"
    log(f"training {run_dir.name}: {cfg.steps} steps, batch {cfg.batch_size}")
    return image_diffusion.train(run_dir, arch, seed, data, cfg, image_diffusion.CosineSchedule(), log=log)


def manifest(arch: str, onnx_path: Path, params: int, fl: dict, cfg, schedule, steps_done: int,
             timing: dict, diffs: dict) -> dict:
    import image_export
    import make_all
    names = image_export.output_names(arch, schedule.prediction_type)
    outputs = [{"name": names[0], "shape": ["N", 3, 32, 32], "dtype": "float32"}]
    if arch == "dualscale":
        outputs.append({"name": "gate", "shape": ["N", 2], "dtype": "float32"})
    sched = schedule.manifest()
    sched["timestep_spacing"] = "trailing"
    man = {
        "format": "dualscale-manifest/1",
        "name": f"{DATASET}-{arch}",
        "kind": "image",
        "file": onnx_path.name,
        "sha256": make_all.sha256(onnx_path),
        "precision": "fp32",
        "inputs": [{"name": "x", "shape": ["N", 3, 32, 32], "dtype": "float32"},
                   {"name": "t", "shape": ["N"], "dtype": "float32"}],
        "outputs": outputs,
        "prediction_type": schedule.prediction_type,
        "scheduler": sched,
        "dataset": DATASET,
        "architecture": arch,
        "parameters": params,
        "flops_per_image": fl["flops"],
        "value_range": [-1.0, 1.0],
        "training": {"seed": 0, "steps": cfg.steps, "steps_done": steps_done, "batch_size": cfg.batch_size,
                     "lr": cfg.lr, "warmup": cfg.warmup, "ema_decay": cfg.ema_decay, "ema_every": cfg.ema_every,
                     "grad_clip": cfg.grad_clip, "train_images": N_TRAIN},
        "recipe_revision": make_all.recipe_revision(),
        "checks": {"max_abs_diff": diffs, "batch1_ms_one_thread_at_export": timing},
    }
    if arch in SAMPLER:
        man["sampler"] = SAMPLER[arch]
    if steps_done < cfg.steps:
        man["partial"] = f"preview: EMA weights after {steps_done} of {cfg.steps} training steps"
    return man


def stage_export(arch: str, partial: bool, root: Path = RUNS, ship: Path = MODELS, force: bool = False) -> dict:
    _torch_setup()
    import image_diffusion
    cfg = train_config(arch)
    run_dir = root / f"{DATASET}-{arch}-seed0"
    onnx_path = ship / f"{DATASET}-{arch}.onnx"
    json_path = onnx_path.with_suffix(".json")
    if not partial and not force and onnx_path.exists() and json_path.exists():
        import make_all
        old = json.loads(json_path.read_text())
        if (old.get("sha256") == make_all.sha256(onnx_path) and "partial" not in old
                and old.get("training", {}).get("steps_done") == cfg.steps):
            log(f"{onnx_path.name} is the finished seed-0 model (sha256 matches its manifest); not re-exported")
            return old
    model, steps_done = image_diffusion.load_ema(run_dir, arch, partial_ok=partial)
    return export_model(model, arch, cfg, steps_done, onnx_path)


def export_model(model, arch: str, cfg, steps_done: int, onnx_path: Path, extra: dict | None = None) -> dict:
    """Exports `model`, checks it against PyTorch (onnxruntime and tract), times it and writes its
    manifest; `extra` replaces or adds manifest keys (a derived model's name, training, sampler)."""
    import image_diffusion
    import image_export
    import image_nets
    schedule = image_diffusion.CosineSchedule()
    ops = image_export.export(model, arch, schedule.prediction_type, onnx_path)
    diffs = image_export.verify(model, arch, schedule.prediction_type, onnx_path)
    timing = image_export.time_batch1(onnx_path)
    fl = image_nets.flops(model)
    man = manifest(arch, onnx_path, image_nets.count_parameters(model), fl, cfg, schedule, steps_done, timing, diffs)
    man.update(extra or {})
    atomic_write_json(onnx_path.with_suffix(".json"), man)
    log(f"exported {onnx_path} ({steps_done} steps): ops {ops}, diffs {diffs}, timing {timing}")
    return man


def stage_eval(arch: str, seed: int, partial: bool, root: Path = RUNS) -> dict:
    _torch_setup()
    import image_eval
    return image_eval.evaluate_run(root, arch, seed, partial=partial, log=log)


SAMPLER_ROWS = {"ddpm-100": "ancestral DDPM, 100 trailing steps", "ddim-5": "DDIM, 5 trailing steps",
                "ddim-10": "DDIM, 10 trailing steps", "ddim-20": "DDIM, 20 trailing steps",
                "unipc-5": "UniPC, 5 steps (`lamx-990-50`)", "unipc-10": "UniPC, the manifest's 10 steps",
                "unipc-20": "UniPC, 20 steps (`karras7-80`)"}


def seed_table(root: Path = RUNS) -> str:
    """Markdown: Fréchet distance by sampler for every evaluated seed of both architectures, with
    the mean and range, and whether the dual-scale model's worst seed beats the baseline's best."""
    res = {arch: {} for arch in ("dualscale", "baseline")}
    for arch in res:
        for path in sorted(root.glob(f"{DATASET}-{arch}-seed*/result.json")):
            r = json.loads(path.read_text())
            res[arch][r["seed"]] = r["fd"]
    seeds = {arch: sorted(r) for arch, r in res.items()}
    head = " | ".join(f"{arch} seeds {', '.join(map(str, seeds[arch]))}: mean [min-max]" for arch in res)
    lines = [f"| sampler | {head} | dual-scale's worst < baseline's best |", "|---|---|---|---|"]
    for key, label in SAMPLER_ROWS.items():
        cells, ranges = [], {}
        for arch in res:
            vals = [res[arch][s][key] for s in seeds[arch] if key in res[arch][s]]
            ranges[arch] = vals
            cells.append(f"{np.mean(vals):.2f} [{min(vals):.2f}-{max(vals):.2f}]" if vals else "-")
        a, b = ranges["dualscale"], ranges["baseline"]
        verdict = ("-" if len(a) < 2 or len(b) < 2 else ("yes" if max(a) < min(b) else "no"))
        lines.append(f"| {label} | {' | '.join(cells)} | {verdict} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["data", "train", "export", "eval", "fd-check", "table"])
    ap.add_argument("--arch", choices=["dualscale", "baseline"], default="dualscale")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, help="override the step count (smoke runs)")
    ap.add_argument("--partial", action="store_true", help="export / evaluate the last checkpoint's EMA")
    ap.add_argument("--force", action="store_true", help="export again a finished model (e.g. after an export change)")
    ap.add_argument("--root", default=str(RUNS), help="run folder (smoke runs: somewhere else)")
    args = ap.parse_args(argv)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    if args.command == "table":
        print(seed_table(root))
        return 0
    if args.command not in ("export",):
        per_run = args.command in ("train", "eval")
        lock_path = root / (f".lock-{args.arch}-seed{args.seed}" if per_run else ".lock")
        lock = open(lock_path, "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"error: another make_images.py holds {lock_path}; wait for it or stop it", file=sys.stderr)
            return 1
    if args.command == "data":
        stage_data(root)
    elif args.command == "train":
        stage_train(args.arch, args.seed, args.steps, root)
    elif args.command == "export":
        stage_export(args.arch, args.partial, root, force=args.force)
    elif args.command == "eval":
        stage_eval(args.arch, args.seed, args.partial, root)
    elif args.command == "fd-check":
        _torch_setup()
        import image_eval
        image_eval.fd_sanity(root, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
