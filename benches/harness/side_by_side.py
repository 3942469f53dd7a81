#!/usr/bin/env python3
"""Side by side: the same .onnx file, same batch, one thread, in onnxruntime and in dualscale.

One command reproduces the tables of BENCHMARKS.md (run from the repository root, after
`cargo build --release`; about 13 minutes on a loaded 2-core machine):

    python3 benches/harness/side_by_side.py --bin target/release/dualscale > bench-tables.md

onnxruntime is a yardstick only (Python: onnxruntime, onnx, numpy, Pillow); the runtime never
needs it. Sections (`--sections`, comma-separated, all by default):

  evals    one model evaluation per shipped model and batch, each precision variant (fp32; the
           shipped fp16 and int8 files, the int8 one made by models/train/int8.py in a form only
           tract runs as intended; int8 made here by onnxruntime's quantize_dynamic (MatMulInteger /
           ConvInteger) and quantize_static (QDQ, per-channel, calibrated on the model's own
           inputs)), in both runtimes. All variants of one (model, batch) are timed interleaved:
           each repetition runs every (variant, runtime) once, order reversed every other
           repetition; a repetition's figure is the median of `iters` evaluations after a warm-up
           (dualscale: `dualscale bench --batch B --iters K --threads 1 --json`, a fresh process
           per repetition, plan building excluded; onnxruntime: one InferenceSession,
           intra/inter-op threads 1, sequential, all graph optimizations). Reported: medians over
           repetitions and the median of the per-repetition ratios dualscale / onnxruntime.
  whole    whole `dualscale generate` runs: peak RSS (/usr/bin/time -v), start-up (wall time of a
           1-step run of one sample; `bench`'s plan-build time), binary size, images per second
           at 1 and 2 threads, KL of the int8 dino variants against fp32's.
  peak     this core's single-thread fp32 matmul throughput (numpy/OpenBLAS, one thread) and
           each model's FLOPs per evaluation (MatMul, Gemm, Conv, counted from the graph), and
           the fraction of that peak each runtime reaches (from the `evals` medians).
  profile  where the time goes: dualscale's slowest nodes (`bench --nodes`) and onnxruntime's
           profile summed per op type.

The load average is printed with every table: the machine is shared, so only ratios measured
side by side mean anything. Variants and their manifests (a copy of the fp32 manifest with
`name`, `file`, `sha256`, `precision` changed) are written to --work, never to models/.
"""

import argparse
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
# (model stem, batch sizes timed): the CLI's sizes (points 1k and 10k; images 1 and 8).
CASES = [("dino-dualscale", [1000, 10000]), ("landscape-dualscale", [1, 8])]
# The int8 variants the harness makes, and their file suffixes in --work.
INT8 = {"int8-dynamic": "int8dyn", "int8-qdq": "int8qdq"}


# ---------------------------------------------------------------- inputs and variants

def manifest(onnx_path):
    return json.loads(Path(onnx_path).with_suffix(".json").read_text())


def sample_shape(man):
    return list(man["inputs"][0]["shape"][1:])


def t_shape(man, batch):
    """The timestep input's shape from the manifest: `[N]` (one per sample), `[1]` or `[]` (one per call)."""
    return [batch if d == "N" else d for d in man["inputs"][1]["shape"]]


def bench_feeds(man, batch):
    """The input `dualscale bench` uses: x[i] = ((i % 17) - 8) / 4, t = T/2 for every sample."""
    shape = [batch] + sample_shape(man)
    n = int(np.prod(shape))
    x = (((np.arange(n) % 17) - 8.0) / 4.0).astype(np.float32).reshape(shape)
    t = np.full(t_shape(man, batch), man["scheduler"]["num_train_timesteps"] // 2, dtype=np.float32)
    return {man["inputs"][0]["name"]: x, man["inputs"][1]["name"]: t}


def alphas_cumprod(sched):
    T = sched["num_train_timesteps"]
    if sched["beta_schedule"] == "linear":
        betas = np.linspace(sched["beta_start"], sched["beta_end"], T, dtype=np.float64)
    elif sched["beta_schedule"] == "squaredcos_cap_v2":
        f = lambda s: np.cos((s + 0.008) / 1.008 * np.pi / 2) ** 2
        s = np.arange(T) / T
        betas = np.minimum(1 - f(s + 1 / T) / f(s), 0.999)
    else:
        raise ValueError(sched["beta_schedule"])
    return np.cumprod(1 - betas)


def clean_samples(man, bin_, work):
    """Clean data x0 for calibration: the 2D data set, or images this model generated."""
    if man["kind"] == "points2d":
        return np.load(MODELS / "data" / f"{man['dataset']}.npy").astype(np.float32)
    from PIL import Image
    out = work / "calib-images"
    run([bin_, "generate", "--model", str(MODELS / f"{man['name']}.onnx"), "--count", "16", "--steps", "10",
         "--seed", "1", "--out", str(out), "--overwrite"])
    imgs = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) for p in sorted(out.glob("*.png"))]
    return np.stack(imgs).transpose(0, 3, 1, 2) / 127.5 - 1.0


def noised_feeds(man, x0, batches, batch, seed):
    """`batches` feeds of x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps at random t (one t per sample,
    or one per batch where the model takes one): the model's own inputs."""
    rng = np.random.default_rng(seed)
    abar = alphas_cumprod(man["scheduler"])
    feeds = []
    for _ in range(batches):
        shape = t_shape(man, batch)
        t_in = rng.integers(0, len(abar), int(np.prod(shape))).reshape(shape)
        a = abar[np.broadcast_to(t_in, [batch])].reshape([batch] + [1] * (x0.ndim - 1))
        x = np.sqrt(a) * x0[rng.integers(0, len(x0), batch)] + np.sqrt(1 - a) * rng.standard_normal((batch, *x0.shape[1:]))
        feeds.append({man["inputs"][0]["name"]: x.astype(np.float32), man["inputs"][1]["name"]: t_in.astype(np.float32)})
    return feeds


def write_variant(src, dst, precision, make):
    """Make dst from src with `make(src, dst)` and give it src's manifest with its own file/sha256."""
    make(str(src), str(dst))
    man = manifest(src)
    digest = hashlib.sha256(dst.read_bytes()).hexdigest()
    man.update(name=dst.stem, file=dst.name, sha256=digest, precision=precision)
    man.pop("checks", None)
    dst.with_suffix(".json").write_text(json.dumps(man, indent=2))
    return dst


def embedding_nodes(model, hops=2):
    """Names of the nodes within `hops` producers of a Sin or Cos (the sinusoidal embeddings' inputs)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    names, frontier = set(), [n for n in model.graph.node if n.op_type in ("Sin", "Cos")]
    for _ in range(hops):
        frontier = [producer[i] for n in frontier for i in n.input if i in producer]
        names.update(n.name for n in frontier)
    return sorted(names)


def int8_path(work, stem, variant):
    return work / f"{stem}-{INT8[variant]}.onnx"


def int8_variants(stem, bin_, work):
    """{variant: path} of the int8 files onnxruntime's tools make from models/STEM.onnx."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    src = MODELS / f"{stem}.onnx"
    man = manifest(src)
    batch = 256 if man["kind"] == "points2d" else 4
    calib = noised_feeds(man, clean_samples(man, bin_, work), 16, batch, seed=0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    # quantize_dynamic as it comes (what issue 12 measured). QDQ only around MatMul/Gemm/Conv and not
    # in the sinusoidal embeddings: their arguments reach ~400, an int8 step there ruins Sin/Cos.
    dyn = lambda s, d: quantize_dynamic(s, d, weight_type=QuantType.QInt8)
    qdq = lambda s, d: quantize_static(s, d, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                       activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                       op_types_to_quantize=["MatMul", "Gemm", "Conv"],
                                       nodes_to_exclude=embedding_nodes(onnx.load(s)))
    make = {"int8-dynamic": dyn, "int8-qdq": qdq}
    return {v: write_variant(src, int8_path(work, stem, v), "int8", make[v]) for v in INT8}


def variants(stem, bin_, work, with_int8):
    """{variant: path}: fp32, the shipped fp16 and int8 files, and (with_int8) onnxruntime's int8."""
    out = {"fp32": MODELS / f"{stem}.onnx"}
    for shipped in ("fp16", "int8"):
        if (MODELS / f"{stem}-{shipped}.onnx").exists():
            out[shipped] = MODELS / f"{stem}-{shipped}.onnx"
    if with_int8:
        out.update(int8_variants(stem, bin_, work))
    return out


# ---------------------------------------------------------------- the two runtimes

def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kw)


def ort_session(path, profile_prefix=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class Ort:
    """onnxruntime, one thread: median ms of `iters` evaluations after one warm-up."""

    def __init__(self, path, batch):
        self.session = ort_session(path)
        self.feeds = bench_feeds(manifest(path), batch)

    def measure(self, iters):
        """(median ms, min ms) of `iters` evaluations after a warm-up."""
        self.session.run(None, self.feeds)
        times = []
        for _ in range(iters):
            s = time.perf_counter()
            self.session.run(None, self.feeds)
            times.append(time.perf_counter() - s)
        return statistics.median(times) * 1e3, min(times) * 1e3


class Dualscale:
    """`dualscale bench`, one process per call: its median of `iters` evaluations after a warm-up."""

    def __init__(self, bin_, path, batch, threads=1, precision=None):
        self.cmd = [bin_, "bench", "--model", path, "--batch", batch, "--threads", threads, "--json"]
        if precision:
            self.cmd += ["--precision", precision]

    def result(self, iters, nodes=0):
        return json.loads(run(self.cmd + ["--iters", iters, "--nodes", nodes]).stdout.splitlines()[-1])

    def measure(self, iters):
        r = self.result(iters)
        return r["median_ms"], r["min_ms"]


def interleaved(runners, reps, iters):
    """{key: [median ms per repetition]}, {key: [min ms per repetition]}: every runner once per
    repetition, order reversed every other repetition."""
    keys = list(runners)
    medians, mins = {k: [] for k in keys}, {k: [] for k in keys}
    for rep in range(reps):
        for k in keys if rep % 2 == 0 else reversed(keys):
            med, lo = runners[k].measure(iters)
            medians[k].append(med)
            mins[k].append(lo)
    return medians, mins


def iters_for(runner, target_s):
    """Evaluations per repetition so that one repetition of this runner takes about target_s."""
    return max(3, min(200, int(target_s * 1e3 / max(runner.measure(3)[0], 1e-3))))


# ---------------------------------------------------------------- sections

def loadavg():
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def ratio_stats(a, b):
    r = [x / y for x, y in zip(a, b)]
    return statistics.median(r), min(r), max(r)


def section_evals(args, results):
    print(f"\n## One evaluation, one thread: dualscale vs onnxruntime ({args.reps} interleaved repetitions)\n")
    print("| model | variant | batch | dualscale ms | onnxruntime ms | dualscale / ort (min-max) | fastest / fastest | dualscale / own fp32 | ort / own fp32 | load avg |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for stem, batches in CASES:
        files = variants(stem, args.bin, args.work, not args.no_int8)
        for batch in batches:
            runners = {}
            for name, path in files.items():
                try:
                    runners[(name, "ds")] = Dualscale(args.bin, path, batch)
                    runners[(name, "ds")].measure(1)
                except subprocess.CalledProcessError as e:
                    print(f"<!-- dualscale refused {path}: {e.stderr.strip()} -->")
                    runners.pop((name, "ds"))
                try:
                    runners[(name, "ort")] = Ort(path, batch)
                except Exception as e:  # onnxruntime has no kernel for an op of this file
                    print(f"<!-- onnxruntime refused {path}: {str(e).splitlines()[0]} -->")
            iters = iters_for(runners[("fp32", "ort")], args.target_s)
            before = os.getloadavg()[0]
            times, mins = interleaved(runners, args.reps, iters)
            load = f"{before:.2f} / {os.getloadavg()[0]:.2f}"
            med = {k: statistics.median(v) for k, v in times.items()}
            for name, path in files.items():
                ds, o = times.get((name, "ds")), times.get((name, "ort"))
                row = dict(model=stem, variant=name, batch=batch, iters=iters, reps=args.reps, file_bytes=path.stat().st_size, load=load)
                if o:
                    row.update(ort_ms=med[(name, "ort")], ort_vs_fp32=ratio_stats(o, times[("fp32", "ort")])[0])
                if ds:
                    row.update(ds_ms=med[(name, "ds")], ds_vs_fp32=ratio_stats(ds, times.get(("fp32", "ds"), ds))[0])
                if ds and o:
                    r, lo, hi = ratio_stats(ds, o)
                    row.update(ratio=r, ratio_min=lo, ratio_max=hi,
                               ratio_of_fastest=min(mins[(name, "ds")]) / min(mins[(name, "ort")]))
                results["evals"].append(row)
                cell = lambda key, fmt: format(row[key], fmt) if key in row else "-"
                ratio = f"{r:.2f} ({lo:.2f}-{hi:.2f})" if ds and o else "-"
                print(f"| {stem} | {name} | {batch} | {cell('ds_ms', '.3f') if ds else 'refused'} | "
                      f"{cell('ort_ms', '.3f') if o else 'refused'} | {ratio} | {cell('ratio_of_fastest', '.2f')} | "
                      f"{cell('ds_vs_fp32', '.2f')} | {cell('ort_vs_fp32', '.2f')} | {load} |")
            sys.stdout.flush()
    print(f"\n{args.reps} repetitions x (iterations per repetition chosen so one onnxruntime fp32 repetition takes ~{args.target_s}s); "
          "ratios are medians of per-repetition ratios; 'fastest / fastest' divides the single fastest evaluation "
          "of each (least disturbed by the machine's other load). Load average: 1-minute, before / after each group.")
    if not args.no_int8:
        section_int8_error(args)


def section_int8_error(args):
    print("\n### Output error of each variant against fp32 (onnxruntime runs of each file, noised model inputs)\n")
    print("| model | variant | max abs error / max abs fp32 output | mean abs error / mean abs fp32 output |")
    print("|---|---|---:|---:|")
    for stem, _ in CASES:
        files = variants(stem, args.bin, args.work, False)
        files.update({v: int8_path(args.work, stem, v) for v in INT8 if int8_path(args.work, stem, v).exists()})
        man = manifest(files["fp32"])
        feeds = noised_feeds(man, clean_samples(man, args.bin, args.work), 4, 256 if man["kind"] == "points2d" else 8, seed=99)
        ref = [ort_session(files["fp32"]).run(None, f)[0] for f in feeds]
        for name, path in files.items():
            # The shipped int8 files are tract-specific (they rely on tract's saturating Cast): what
            # onnxruntime computes from them is not what dualscale does. Their quality is measured
            # by dualscale itself (the KL table, models/report/INT8.md).
            if name in ("fp32", "int8"):
                continue
            sess = ort_session(path)
            out = [sess.run(None, f)[0] for f in feeds]
            mx = max(np.abs(o - r).max() for o, r in zip(out, ref)) / max(np.abs(r).max() for r in ref)
            mn = np.mean([np.abs(o - r).mean() for o, r in zip(out, ref)]) / np.mean([np.abs(r).mean() for r in ref])
            print(f"| {stem} | {name} | {mx:.4f} | {mn:.4f} |")


def time_v(cmd):
    """Wall seconds, peak RSS (MiB) and CPU percent of one run of `cmd` under /usr/bin/time -v."""
    s = time.perf_counter()
    err = run(["/usr/bin/time", "-v"] + cmd).stderr
    wall = time.perf_counter() - s
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1)) / 1024
    return wall, rss, int(re.search(r"Percent of CPU this job got: (\d+)%", err).group(1))


def section_whole(args, results):
    out = args.work / "gen"
    gen = [args.bin, "generate", "--out", out, "--overwrite"]
    dino = ["--model", MODELS / "dino-dualscale.onnx"]
    print(f"\n## Whole runs ({loadavg()})\n")
    print(f"### Peak resident memory of `dualscale generate` (median of {args.whole_reps}; each model's default sampler: dino 20 UniPC steps, the embedded image model 4 DDIM steps)\n")
    print("| run | peak RSS MiB (min-max) | wall s |")
    print("|---|---:|---:|")
    for label, extra in [("dino, --count 1000", dino + ["--count", "1000"]),
                         ("dino, default count (10,000 points, batch 2,000)", dino),
                         ("dino, --count 10000 --batch 10000", dino + ["--count", "10000", "--batch", "10000"]),
                         ("image model (default), 1 image", [])]:
        walls, rsss, _ = zip(*[time_v(gen + extra) for _ in range(args.whole_reps)])
        wall, rss, lo, hi = statistics.median(walls), statistics.median(rsss), min(rsss), max(rsss)
        results["rss"].append(dict(run=label, rss_mib=rss, wall_s=wall))
        print(f"| {label} | {rss:.1f} ({lo:.1f}-{hi:.1f}) | {wall:.3f} |")

    print(f"\n### Start-up (median wall time of {args.startup_reps} runs; process start, load, verify, plan, steps, write)\n")
    print("| run | wall ms |")
    print("|---|---:|")
    runs = [("`dualscale --version` (process start only)", [args.bin, "--version"]),
            ("image model, `generate --steps 1 --count 1`", gen + ["--steps", "1", "--count", "1"]),
            ("dino, `generate --steps 1 --count 1`", gen + dino + ["--steps", "1", "--count", "1"]),
            ("dino, `generate --steps 1` (10,000 points)", gen + dino + ["--steps", "1"])]
    for label, cmd in runs:
        walls = []
        for _ in range(args.startup_reps):
            s = time.perf_counter()
            run(cmd)
            walls.append(time.perf_counter() - s)
        results["startup"].append(dict(run=label, wall_ms=statistics.median(walls) * 1e3))
        print(f"| {label} | {statistics.median(walls) * 1e3:.1f} |")
    for stem, batch in [("landscape-dualscale", 1), ("dino-dualscale", 2000)]:
        plans = [Dualscale(args.bin, MODELS / f"{stem}.onnx", batch).result(1)["plan_ms"] for _ in range(args.startup_reps)]
        print(f"| {stem}: plan build at batch {batch} (`bench` plan_ms) | {statistics.median(plans):.1f} |")

    print("\n### Binary size\n")
    with tempfile.TemporaryDirectory() as d:
        for label, path, strip in [("x86_64 release", Path(args.bin), "strip"),
                                   ("aarch64 release", args.aarch64, "aarch64-linux-gnu-strip")]:
            if not path or not Path(path).exists():
                print(f"- {label}: not measured (no build at {path})")
                continue
            stripped = Path(d) / "s"
            run([strip, "-o", stripped, path])
            print(f"- {label} ({path}): {Path(path).stat().st_size / 1e6:.2f} MB as built, {stripped.stat().st_size / 1e6:.2f} MB stripped")

    print(f"\n### Images per second, the embedded image model (4 DDIM steps), 16 images ({args.whole_reps} interleaved repetitions, whole run)\n")
    print("| threads | batch | images/s | vs 1 thread | CPU % (time -v) |")
    print("|---:|---:|---:|---:|---:|")
    shapes = [(1, 1), (2, 2), (1, 2), (2, 16)]
    runs = {s: [] for s in shapes}
    for rep in range(args.whole_reps):
        for th, b in shapes if rep % 2 == 0 else reversed(shapes):
            runs[(th, b)].append(time_v(gen + ["--count", "16", "--threads", th, "--batch", b]))
    base = statistics.median(r[0] for r in runs[(1, 1)])
    for th, b in shapes:
        w = statistics.median(r[0] for r in runs[(th, b)])
        cpu = statistics.median(r[2] for r in runs[(th, b)])
        print(f"| {th} | {b} | {16 / w:.1f} | {base / w:.2f}x | {cpu} |")

    print(f"\n### Parallel width, one evaluation (`dualscale bench --threads`, {args.reps} interleaved repetitions)\n")
    print("| model | batch | threads | median ms | samples/s | vs 1 thread |")
    print("|---|---:|---:|---:|---:|---:|")
    for stem, batch in [("landscape-dualscale", 2), ("landscape-dualscale", 8), ("dino-dualscale", 10000)]:
        runners = {th: Dualscale(args.bin, MODELS / f"{stem}.onnx", batch, threads=th) for th in (1, 2)}
        times, _ = interleaved(runners, args.reps, 10 if stem.startswith("landscape") else 3)
        for th in (1, 2):
            ms = statistics.median(times[th])
            print(f"| {stem} | {batch} | {th} | {ms:.2f} | {batch / ms * 1e3:.0f} | {ratio_stats(times[1], times[th])[0]:.2f}x |")
    print(f"\n({loadavg()} after; a second core is only free when nothing else runs on this machine)")
    if not args.no_int8:
        section_kl(args, gen)


def section_kl(args, gen):
    print("\n### Quality of the int8 dino variants (shipped and onnxruntime's; 10,000 points, seed 0, 20 UniPC steps; KL bits, k-NN, vs models/data/dino.npy)\n")
    print("| variant | KL bits | vs fp32 |")
    print("|---|---:|---:|")
    kl = {}
    files = variants("dino-dualscale", args.bin, args.work, False)
    files.update({v: int8_path(args.work, "dino-dualscale", v) for v in INT8})
    for name, path in files.items():
        if not path.exists():
            print(f"| {name} | not made (run the evals section) | |")
            continue
        run(gen + ["--model", path, "--name", name, "--seed", "0"])
        r = json.loads(run([args.bin, "eval", args.work / "gen" / f"{name}.npy", "--reference", MODELS / "data" / "dino.npy", "--json"]).stdout.splitlines()[-1])
        kl[name] = r["kl_bits"]
        print(f"| {name} | {kl[name]:.3f} | {kl[name] / kl['fp32']:.3f} |")


def count_flops(path, batch):
    """2 x multiply-adds of MatMul, Gemm and Conv for one evaluation at `batch`, from inferred shapes."""
    m = onnx.load(str(path))
    for inp in m.graph.input:
        for d in inp.type.tensor_type.shape.dim:
            if d.dim_param:
                d.dim_value = batch
    m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
    shapes.update({i.name: list(i.dims) for i in m.graph.initializer})
    flops = 0
    for n in m.graph.node:
        if n.op_type in ("MatMul", "Gemm", "Conv"):
            out = shapes[n.output[0]]
            if n.op_type == "Conv":
                w = shapes[n.input[1]]
                flops += 2 * int(np.prod(out)) * int(np.prod(w[1:]))
            else:
                a = shapes[n.input[0]]
                trans_a = any(at.name == "transA" and at.i for at in n.attribute)
                k = a[-2] if trans_a else a[-1]
                flops += 2 * int(np.prod(out)) * k
    return flops


def peak_gflops(n, reps):
    """Median GFLOP/s of an n x n fp32 matmul in numpy with every BLAS pool at one thread."""
    code = ("import numpy as np, time, statistics\n"
            f"a = np.random.rand({n}, {n}).astype(np.float32); b = np.random.rand({n}, {n}).astype(np.float32); a @ b\n"
            f"ts = []\nfor _ in range({reps}):\n    s = time.perf_counter(); a @ b; ts.append(time.perf_counter() - s)\n"
            f"print(2 * {n} ** 3 / statistics.median(ts) / 1e9)")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return float(run([sys.executable, "-c", code], env=env).stdout)


def section_peak(args, results):
    peaks = [peak_gflops(n, 7) for n in (1024, 2048, 1024, 2048)]
    peak = max(statistics.median(peaks[0::2]), statistics.median(peaks[1::2]))
    print(f"\n## FLOPs and fraction of peak ({loadavg()})\n")
    print(f"Single-thread fp32 matmul, numpy (OpenBLAS, 1 thread), median of 7: 1024^2 {statistics.median(peaks[0::2]):.1f} GFLOP/s, "
          f"2048^2 {statistics.median(peaks[1::2]):.1f} GFLOP/s; peak used below: {peak:.1f} GFLOP/s.\n")
    print("| model | batch | MFLOPs per evaluation | per sample | dualscale GFLOP/s (% of peak) | onnxruntime GFLOP/s (% of peak) |")
    print("|---|---:|---:|---:|---:|---:|")
    for stem, batches in CASES:
        for batch in batches:
            f = count_flops(MODELS / f"{stem}.onnx", batch)
            row = next((r for r in results["evals"] if r["model"] == stem and r["batch"] == batch and r["variant"] == "fp32"), None)
            cells = []
            for key in ("ds_ms", "ort_ms"):
                if row and key in row:
                    g = f / (row[key] * 1e-3) / 1e9
                    cells.append(f"{g:.1f} ({100 * g / peak:.0f}%)")
                else:
                    cells.append("not measured")
            print(f"| {stem} | {batch} | {f / 1e6:.1f} | {f / batch / 1e3:.1f} k | {cells[0]} | {cells[1]} |")


def profile_one(args, path, batch):
    """dualscale's per-node times (`bench --nodes`) and onnxruntime's profile, summed per op type."""
    r = Dualscale(args.bin, path, batch).result(10, nodes=10_000)
    ds_op, ds_n = {}, {}
    for n in r["nodes"]:
        op = n["op"].split("(")[0]
        ds_op[op] = ds_op.get(op, 0) + n["ms"]
        ds_n[op] = ds_n.get(op, 0) + 1
    total = sum(ds_op.values())
    print(f"**{path.stem}, batch {batch}**. dualscale: median {r['median_ms']:.2f} ms, profiled nodes sum to {total:.2f} ms; "
          "per tract op (ms, % of profiled, nodes): "
          + "; ".join(f"{op} {ms:.2f} ({100 * ms / total:.0f}%, {ds_n[op]})" for op, ms in sorted(ds_op.items(), key=lambda kv: -kv[1])[:8]))
    print("slowest nodes: " + "; ".join(f"`{n['name']}` [{n['op']}] {n['ms']:.2f}" for n in r["nodes"][:6]) + "\n")
    runs = 10
    with tempfile.TemporaryDirectory() as d:
        sess = ort_session(path, profile_prefix=str(Path(d) / "ort"))
        feeds = bench_feeds(manifest(path), batch)
        for _ in range(runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op, ops = {}, {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            per_op[op] = per_op.get(op, 0) + e["dur"] / runs / 1e3
            ops.setdefault(op, set()).add(e["name"])
    total = sum(per_op.values())
    print(f"onnxruntime: per op type after its fusions (ms, % of profiled, nodes), profiled kernels sum to {total:.2f} ms: "
          + "; ".join(f"{op} {ms:.2f} ({100 * ms / total:.0f}%, {len(ops[op])})" for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[:10]) + "\n")


def section_profile(args, results):
    print(f"\n## Where the time goes ({loadavg()})\n")
    for stem, batches in CASES:
        for batch in batches:
            profile_one(args, MODELS / f"{stem}.onnx", batch)
    for stem, batch in [("dino-dualscale", 10000), ("landscape-dualscale", 1)]:
        if (MODELS / f"{stem}-int8.onnx").exists():
            profile_one(args, MODELS / f"{stem}-int8.onnx", batch)
        for v in INT8:
            if int8_path(args.work, stem, v).exists():
                profile_one(args, int8_path(args.work, stem, v), batch)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", default=os.environ.get("DUALSCALE_BIN", str(ROOT / "target/release/dualscale")),
                   help="the dualscale binary to time (default: $DUALSCALE_BIN, else target/release/dualscale)")
    p.add_argument("--aarch64", default="/work/target-cross/aarch64-unknown-linux-gnu/release/dualscale",
                   help="aarch64 release binary whose size to report, if it exists")
    p.add_argument("--sections", default="evals,whole,peak,profile", help="comma-separated; peak uses the evals medians")
    p.add_argument("--reps", type=int, default=7, help="interleaved repetitions per evaluation group")
    p.add_argument("--target-s", type=float, default=0.5, help="seconds of one onnxruntime fp32 repetition")
    p.add_argument("--whole-reps", type=int, default=3, help="runs per whole-generate measurement (RSS, images/s)")
    p.add_argument("--startup-reps", type=int, default=9, help="runs per start-up measurement")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 variants")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "dualscale-side-by-side")
    p.add_argument("--json", type=Path, help="also write every measured row here")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.bin = str(Path(args.bin).resolve())
    results = {"evals": [], "rss": [], "startup": []}
    print(f"# side_by_side.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"- machine: {cpu}, {os.cpu_count()} CPUs, {platform.machine()}; {loadavg()} at start")
    print(f"- {run([args.bin, '--version']).stdout.strip()} ({args.bin}); onnxruntime {ort.__version__}; onnx {onnx.__version__}; numpy {np.__version__}")
    lock = (ROOT / "Cargo.lock").read_text()
    tract = re.search(r'name = "tract-onnx"\nversion = "([^"]+)"', lock)
    print(f"- tract-onnx {tract.group(1) if tract else '?'} (Cargo.lock)")
    sections = {"evals": section_evals, "whole": section_whole, "peak": section_peak, "profile": section_profile}
    for name in args.sections.split(","):
        sections[name](args, results)
        sys.stdout.flush()
    print(f"\n({loadavg()} at the end)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
