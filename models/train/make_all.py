#!/usr/bin/env python
"""Makes every shipped 2D model, the evaluation and the report, resumably.

    nice -n 10 python models/train/make_all.py            # everything (= `all`)
    python models/train/make_all.py report                # REPORT.md from whatever results exist

Stages, in priority order: data -> dino-dualscale seed 0 (train, export, manifest) -> KL
fixture -> the other seed-0 models -> seeds 1 and 2 -> report. Each finished run leaves
`models/train/runs/{name}-seed{s}/result.json`; rerunning skips finished runs and resumes an
interrupted one from its last checkpoint. One process at a time (a lock file enforces it),
one torch thread, niceness >= 10. It never touches anything outside models/ except the KL
fixture in tests/fixtures/kl/ and the progress log.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import atomic  # noqa: E402
import datasets  # noqa: E402
import diffusion  # noqa: E402
import kl  # noqa: E402
import nets  # noqa: E402
import onnx_export  # noqa: E402
import report  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
ARCHS = ("baseline", "dualscale")
SEEDS = (0, 1, 2)
N_SAMPLES = 10_000
K = 5
FIRST = ("dino", "dualscale")


@dataclass(frozen=True)
class Paths:
    ship: Path          # where seed-0 .onnx + .json go
    data: Path          # reference datasets (.npy)
    runs: Path          # checkpoints, samples, per-run results (git-ignored)
    report_dir: Path    # CSV / JSON / PNG of the report
    report_md: Path
    fixture: Path
    progress: Path | None


def default_paths(progress: str | None) -> Paths:
    return Paths(
        ship=MODELS, data=MODELS / "data", runs=MODELS / "train" / "runs",
        report_dir=MODELS / "report", report_md=MODELS / "REPORT.md",
        fixture=REPO / "tests" / "fixtures" / "kl", progress=Path(progress) if progress else None,
    )


def smoke_paths() -> Paths:
    root = MODELS / "train" / "runs" / "smoke"
    return Paths(ship=root / "ship", data=root / "data", runs=root, report_dir=root / "report",
                 report_md=root / "REPORT.md", fixture=root / "fixture", progress=None)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def progress(P: Paths, msg: str) -> None:
    log(msg)
    if P.progress is not None:
        with open(P.progress, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")


atomic_write_bytes = atomic.write_bytes


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    import io
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recipe_revision() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return "uncommitted"
    rev = out.stdout.strip()
    return rev if out.returncode == 0 and len(rev) == 40 else "uncommitted"


# ---------------------------------------------------------------- data

_DATA: dict[str, np.ndarray] = {}
_RHO: dict[str, np.ndarray] = {}


def dataset(P: Paths, name: str) -> np.ndarray:
    """The reference sample, regenerated from the recipe and checked against the shipped .npy."""
    if name not in _DATA:
        arr = datasets.make(name)
        path = P.data / f"{name}.npy"
        if path.exists():
            shipped = np.load(path)
            if shipped.dtype != np.float32 or not np.array_equal(shipped, arr):
                raise RuntimeError(
                    f"{path} differs from what datasets.{name}() makes now (library versions?); "
                    "install models/train/requirements.txt or delete the file to regenerate it")
        else:
            atomic_save_npy(path, arr)
            log(f"wrote {path}")
        _DATA[name] = arr
    return _DATA[name]


def rho(P: Paths, name: str) -> np.ndarray:
    if name not in _RHO:
        _RHO[name] = kl.rho_k(dataset(P, name), K)
    return _RHO[name]


# ---------------------------------------------------------------- one run

def manifest(P: Paths, ds: str, arch: str, onnx_path: Path, params: int, cfg: diffusion.TrainConfig,
             schedule: diffusion.Schedule) -> dict:
    name = f"{ds}-{arch}"
    outputs = [{"name": "eps", "shape": ["N", 2], "dtype": "float32"}]
    if arch == "dualscale":
        outputs.append({"name": "gate", "shape": [1, 2], "dtype": "float32"})
    return {
        "format": "dualscale-manifest/1",
        "name": name,
        "kind": "points2d",
        "file": onnx_path.name,
        "sha256": sha256(onnx_path),
        "precision": "fp32",
        "inputs": [{"name": "x", "shape": ["N", 2], "dtype": "float32"},
                   {"name": "t", "shape": [1], "dtype": "float32"}],
        "outputs": outputs,
        "prediction_type": "epsilon",
        "scheduler": schedule.manifest(),
        "dataset": ds,
        "architecture": arch,
        "parameters": params,
        "training": {"seed": 0, "steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
                     "ema_decay": cfg.ema_decay, "ema_every": cfg.ema_every, "grad_clip": cfg.grad_clip},
        "recipe_revision": recipe_revision(),
        "data_stats": datasets.stats(dataset(P, ds)),
    }


def shipped_ok(P: Paths, ds: str, arch: str) -> bool:
    onnx_path, json_path = P.ship / f"{ds}-{arch}.onnx", P.ship / f"{ds}-{arch}.json"
    if not (onnx_path.exists() and json_path.exists()):
        return False
    return json.loads(json_path.read_text()).get("sha256") == sha256(onnx_path)


def ship(P: Paths, ds: str, arch: str, model, params: int, cfg, schedule) -> dict:
    """Export seed 0 to P.ship, check it with onnxruntime, write the manifest (skip if current)."""
    onnx_path, json_path = P.ship / f"{ds}-{arch}.onnx", P.ship / f"{ds}-{arch}.json"
    P.ship.mkdir(parents=True, exist_ok=True)
    if not shipped_ok(P, ds, arch):
        ops = onnx_export.export(model, arch, onnx_path)
        log(f"exported {onnx_path.name}: ops {ops}")
    diffs = onnx_export.verify(model, arch, onnx_path)
    man = manifest(P, ds, arch, onnx_path, params, cfg, schedule)
    if not json_path.exists() or json.loads(json_path.read_text()) != man:
        atomic_write_json(json_path, man)
    return diffs


def reexport_shipped(names: list[str]) -> None:
    """Writes the shipped 2D models again in the current export form (onnx_export: one timestep per
    call) from their own weights, checks each against PyTorch, and updates the manifest's sha256
    and declared I/O, keeping every other field. `python models/train/make_all.py reexport`."""
    import fewstep

    for name in names:
        onnx_path = MODELS / f"{name}.onnx"
        man = json.loads(onnx_path.with_suffix(".json").read_text())
        arch = man["architecture"]
        model = fewstep.load_shipped(man["dataset"], arch, onnx_path)  # checks the old file too
        onnx_export.export(model, arch, onnx_path)
        diffs = onnx_export.verify(model, arch, onnx_path)
        man["sha256"] = sha256(onnx_path)
        man["inputs"][1]["shape"] = [1]
        if arch == "dualscale":
            man["outputs"][1]["shape"] = [1, 2]
        atomic_write_json(onnx_path.with_suffix(".json"), man)
        log(f"re-exported {onnx_path.name}: max diffs {diffs}")


def moment_matched_start(data: np.ndarray, schedule: diffusion.Schedule, z: torch.Tensor) -> torch.Tensor:
    """x_T ~ N(sqrt(abar_T) mean, abar_T cov + (1 - abar_T) I), the forward process's own marginal
    moments at t = T-1, built from the same standard-normal draw `z` as the N(0, I) start."""
    st = datasets.stats(data)
    abar = float(schedule.alphas_cumprod[-1])
    mean = np.sqrt(abar) * np.asarray(st["mean"])
    cov = abar * np.asarray(st["cov"]) + (1 - abar) * np.eye(2)
    chol = np.linalg.cholesky(cov)
    x = mean + z.numpy().astype(np.float64) @ chol.T
    return torch.from_numpy(x.astype(np.float32))


def evaluate(P: Paths, ds: str, arch: str, seed: int, run_dir: Path, model, schedule) -> dict:
    data = dataset(P, ds)
    out = {}
    for start in ("normal", "moment"):
        gen = torch.Generator().manual_seed(10_000 + seed)  # same draws for both starts
        z = torch.randn(N_SAMPLES, 2, generator=gen)
        x_T = z if start == "normal" else moment_matched_start(data, schedule, z)
        t0 = time.perf_counter()
        x = diffusion.sample(model, schedule, x_T, gen).numpy()
        out[f"sample_wall_s_{start}"] = time.perf_counter() - t0
        if not np.all(np.isfinite(x)):
            raise RuntimeError(f"{run_dir.name}: non-finite samples ({start} start)")
        atomic_save_npy(run_dir / f"samples-{start}.npy", x.astype(np.float32))
        out[f"kl_bits_{start}"] = kl.kl_bits(data, x, K, rho=rho(P, ds))
    if arch == "dualscale":
        w = diffusion.gate_per_timestep(model, schedule)
        share = diffusion.branch_contributions(model, schedule, data)
        lines = ["t,w_global,w_local,contrib_global"] + [
            f"{t},{w[t, 0]:.8f},{w[t, 1]:.8f},{share[t]:.6f}" for t in range(len(w))]
        atomic_write_bytes(P.report_dir / f"gates-{ds}-seed{seed}.csv", ("\n".join(lines) + "\n").encode())
        out["gate_global_t0"] = float(w[0, 0])
        out["gate_global_t99"] = float(w[-1, 0])
        out["gate_global_mean"] = float(w[:, 0].mean())
        out["contrib_global_t0"] = float(share[0])
        out["contrib_global_t99"] = float(share[-1])
    return out


def do_run(P: Paths, ds: str, arch: str, seed: int, cfg, schedule) -> dict:
    name = f"{ds}-{arch}"
    run_dir = P.runs / f"{name}-seed{seed}"
    result_path = run_dir / "result.json"
    gate_ok = arch != "dualscale" or (P.report_dir / f"gates-{ds}-seed{seed}.csv").exists()
    if result_path.exists() and gate_ok and (seed != 0 or shipped_ok(P, ds, arch)):
        return json.loads(result_path.read_text())
    t_start = time.perf_counter()
    summary = diffusion.train(run_dir, arch, seed, dataset(P, ds), cfg, schedule, log=log)
    model = diffusion.load_ema(run_dir, arch)
    result = {"dataset": ds, "arch": arch, "seed": seed, **summary}
    if seed == 0:
        result["onnx_max_abs_diff"] = ship(P, ds, arch, model, summary["parameters"], cfg, schedule)
        if (ds, arch) == FIRST:
            progress(P, f"{name} ready: {P.ship / (name + '.onnx')} + .json (models/data/{ds}.npy)")
    result.update(evaluate(P, ds, arch, seed, run_dir, model, schedule))
    result["host"] = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                      "threads": torch.get_num_threads()}
    atomic_write_json(result_path, result)
    progress(P, f"{name}-seed{seed} done: train {summary['train_wall_s']:.0f}s "
                f"({summary['steps_per_s']:.0f} steps/s), this call {time.perf_counter() - t_start:.0f}s, "
                f"KL N(0,I) start {result['kl_bits_normal']:.3f} bits, "
                f"moment-matched start {result['kl_bits_moment']:.3f} bits")
    return result


# ---------------------------------------------------------------- fixture, report

def make_fixture(P: Paths) -> None:
    """tests/fixtures/kl: 2,000 dino points, 500 dino-dualscale seed-0 samples, the Python KL."""
    exp_path = P.fixture / "expected.json"
    if exp_path.exists():
        exp = json.loads(exp_path.read_text())
        got = kl.kl_bits(np.load(P.fixture / "data.npy"), np.load(P.fixture / "samples.npy"), exp["k"])
        if got != exp["kl_bits"]:
            raise RuntimeError(f"{exp_path}: stored kl_bits {exp['kl_bits']} but the estimator now gives {got}")
        return
    samples_path = P.runs / "dino-dualscale-seed0" / "samples-normal.npy"
    data = dataset(P, "dino")[:2000].copy()
    samples = np.load(samples_path)[:500].astype(np.float32)
    value = kl.kl_bits(data, samples, K)
    atomic_save_npy(P.fixture / "data.npy", data)
    atomic_save_npy(P.fixture / "samples.npy", samples)
    atomic_write_json(exp_path, {"k": K, "kl_bits": value, "n": len(data), "m": len(samples)})
    progress(P, f"KL fixture written to {P.fixture} (kl_bits {value:.6f})")


def collect(P: Paths) -> list[dict]:
    """Per-run results: runs/*/result.json, falling back to the committed results.json."""
    found = {}
    old = P.report_dir / "results.json"
    if old.exists():
        for r in json.loads(old.read_text()).get("runs", []):
            found[(r["dataset"], r["arch"], r["seed"])] = r
    if P.runs.exists():
        for path in sorted(P.runs.glob("*-seed*/result.json")):
            r = json.loads(path.read_text())
            found[(r["dataset"], r["arch"], r["seed"])] = r
    order = {d: i for i, d in enumerate(datasets.NAMES)}
    return [found[k] for k in sorted(found, key=lambda k: (order[k[0]], k[1], k[2]))]


_FLOOR: dict[str, list[float]] = {}


def kl_floor(P: Paths, ds: str) -> list[float]:
    """KL of 10,000 fresh points of the true distribution (seeds 1, 2, 3) against the data: what a
    perfect model would score, i.e. the estimator's own bias and noise at these sizes."""
    if ds not in _FLOOR:
        _FLOOR[ds] = [kl.kl_bits(dataset(P, ds), datasets.make(ds, N_SAMPLES, seed=s), K, rho=rho(P, ds))
                      for s in (1, 2, 3)]
    return _FLOOR[ds]


def make_report(P: Paths, cfg) -> None:
    runs = collect(P)
    floor = {ds: kl_floor(P, ds) for ds in datasets.NAMES}
    P.report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(P.report_dir / "results.json", {
        "format": "dualscale-results/1",
        "k": K, "n_data": datasets.N_POINTS, "n_samples": N_SAMPLES,
        "training": asdict(cfg),
        "published": report.PUBLISHED,
        "kl_floor_true_distribution": floor,
        "runs": runs,
    })
    report.write(runs, P, data_of=lambda ds: dataset(P, ds), floor=floor)
    log(f"wrote {P.report_md} from {len(runs)} runs")


# ---------------------------------------------------------------- main

def plan(datasets_: list[str], archs: list[str], seeds: list[int]):
    """Run order: dino-dualscale seed 0 first, then the other seed-0 models, then other seeds."""
    jobs = [(d, a, s) for s in seeds for d in datasets_ for a in archs]
    return sorted(jobs, key=lambda j: (j[2], (j[0], j[1]) != FIRST))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", default="all", choices=["all", "data", "fixture", "report", "reexport"])
    ap.add_argument("--datasets", nargs="+", default=list(datasets.NAMES), choices=datasets.NAMES)
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    ap.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    ap.add_argument("--progress-log", default="/tmp/recipe_progress.log",
                    help="file that gets one line per finished run ('' for none)")
    ap.add_argument("--smoke", type=int, metavar="STEPS",
                    help="quick end-to-end check with STEPS training steps; writes only under runs/smoke/")
    args = ap.parse_args(argv)

    if os.nice(0) < 10:
        os.nice(10 - os.nice(0))
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass

    cfg, schedule = diffusion.TrainConfig(), diffusion.Schedule()
    P = default_paths(args.progress_log or None)
    if args.smoke:
        P = smoke_paths()
        cfg = replace(cfg, steps=args.smoke, ckpt_every=max(args.smoke // 4, 1))
    P.runs.mkdir(parents=True, exist_ok=True)
    if args.command != "report":  # `report` only reads results and rewrites the report atomically
        lock = open(P.runs / ".lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"error: another make_all.py holds {P.runs / '.lock'}; run one at a time", file=sys.stderr)
            return 1

    if args.command in ("all", "data"):
        for ds in datasets.NAMES:
            dataset(P, ds)
    if args.command == "all":
        ran_any = False
        for ds, arch, seed in plan(args.datasets, args.archs, args.seeds):
            before = (P.runs / f"{ds}-{arch}-seed{seed}" / "result.json").exists()
            do_run(P, ds, arch, seed, cfg, schedule)
            if (ds, arch, seed) == (*FIRST, 0):
                make_fixture(P)
            if not before:  # keep REPORT.md current after every newly finished run
                make_report(P, cfg)
                ran_any = True
        if not ran_any:
            make_report(P, cfg)
    if args.command == "fixture":
        make_fixture(P)
    if args.command == "reexport":
        reexport_shipped([f"{ds}-{arch}" for ds in args.datasets for arch in args.archs] + ["dino-dualscale-fewstep"])
    if args.command == "report":
        make_report(P, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
