"""Interleaved A/B timing of ONNX variants in `dualscale bench` (the measurements of models/report/INT8.md).

    python models/train/int8_bench.py ab    --bin /work/bin/dualscale-rel --batch 10000 --iters 5 --reps 7 A.onnx B.onnx ...
    python models/train/int8_bench.py nodes --bin /work/bin/dualscale-rel --batch 10000 --iters 3 --reps 3 A.onnx B.onnx ...

`ab`: one driver process; per repetition every model runs once (order reversed every other repetition) as
`dualscale bench --batch B --iters K --threads 1 --json` (wall: bench's median_ms) and once more with
`--iters 1`; CPU ms per evaluation = (child CPU time of the K-iteration run - that of the 1-iteration
run) / (K - 1), so that load, plan and warm-up cancel. On a shared machine the CPU figure is the
steadier one (it does not count time the process waits for a core). Ratios: per repetition against
the first model, median (min-max) over repetitions. Each model needs its manifest (NAME.json) beside it.
`nodes`: `dualscale bench --nodes`, per-node times summed per tract op, median over repetitions.

    python models/train/int8_bench.py fd DIR_FP32 DIR_INT8 ...

`fd`: Fréchet distance (models/train/image_eval.py features) of the PNGs `dualscale generate` wrote in
each DIR, scored as image_samplers.py `runtime_row` scores them: against the 2,000 held-out images
(set seed 1), and against the first DIR's images. Reads the cached image sets of make_images.py
(models/train/runs/images/data/, never written here).
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import resource
import statistics as st
import subprocess


def bench(binary, model, batch, iters, nodes=0):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = ["nice", "-n", "5", binary, "bench", "--model", model, "--batch", str(batch), "--iters", str(iters), "--threads", "1"]
    cmd += ["--nodes", str(nodes)] if nodes else ["--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1e3
    return out, cpu


def ab(a):
    wall = {m: [] for m in a.models}
    cpu = {m: [] for m in a.models}
    for r in range(a.reps):
        for m in (a.models if r % 2 == 0 else a.models[::-1]):
            _, c1 = bench(a.bin, m, a.batch, 1)
            out, ck = bench(a.bin, m, a.batch, a.iters)
            wall[m].append(json.loads(out)["median_ms"])
            cpu[m].append((ck - c1) / (a.iters - 1))
    b = a.models[0]
    print("| model | batch | wall ms (median) | wall / first (min-max) | CPU ms per eval | CPU / first (min-max) |")
    print("|---|---:|---:|---:|---:|---:|")
    for m in a.models:
        rw = [x / y for x, y in zip(wall[m], wall[b])]
        rc = [x / y for x, y in zip(cpu[m], cpu[b])]
        print(f"| {m.split('/')[-1]} | {a.batch} | {st.median(wall[m]):.1f} | {st.median(rw):.3f} ({min(rw):.2f}-{max(rw):.2f}) "
              f"| {st.median(cpu[m]):.1f} | {st.median(rc):.3f} ({min(rc):.2f}-{max(rc):.2f}) |")
    print("raw", json.dumps({"wall": wall, "cpu": cpu}))


def nodes(a):
    acc = {m: collections.defaultdict(list) for m in a.models}
    tot = {m: [] for m in a.models}
    for r in range(a.reps):
        for m in (a.models if r % 2 == 0 else a.models[::-1]):
            out, _ = bench(a.bin, m, a.batch, a.iters, nodes=1000)
            per, cnt = collections.Counter(), collections.Counter()
            for line in out.splitlines():
                mm = re.match(r"\s*([\d.]+) ms\s+[\d.]+%\s+(\S+) \((.*)\)$", line)
                if mm:
                    op = re.sub(r"\(.*", "", mm.group(3))
                    per[op] += float(mm.group(1))
                    cnt[op] += 1
            for op in per:
                acc[m][op].append((per[op], cnt[op]))
            tot[m].append(sum(per.values()))
    for m in a.models:
        total = st.median(tot[m])
        print(f"\n{m}: nodes sum {total:.1f} ms (median)\n\n| tract op | nodes | ms | % |\n|---|---:|---:|---:|")
        rows = sorted(((st.median(v[0] for v in vals), vals[0][1], op) for op, vals in acc[m].items()), reverse=True)
        for ms, n, op in rows:
            if ms > 0.2:
                print(f"| {op} | {n} | {ms:.1f} | {100 * ms / total:.0f}% |")


def fd(a):
    import sys
    from pathlib import Path

    import numpy as np
    from PIL import Image
    import torch
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import image_eval
    import landscapes
    torch.set_num_threads(1)
    data = Path(__file__).resolve().parent / "runs" / "images" / "data"
    train = np.asarray(np.load(data / "landscapes-seed0-n40000.npy", mmap_mode="r")[:image_eval.N_STATS])  # the standardisation set
    held = np.load(data / "landscapes-seed1-n2000.npy")
    ref = image_eval.features(landscapes.to_model(held), train)
    feats = []
    print("| images | count | FD vs held-out | FD vs first |\n|---|---:|---:|---:|")
    for d in a.models:
        u8 = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(Path(d).glob("*.png"))])
        feats.append(image_eval.features(landscapes.to_model(u8), train))
        print(f"| {d} | {len(u8)} | {image_eval.frechet(feats[-1], ref):.3f} | {image_eval.frechet(feats[-1], feats[0]):.3f} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["ab", "nodes", "fd"])
    ap.add_argument("--bin", default="target/release/dualscale")
    ap.add_argument("--batch", type=int, default=10000)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    {"ab": ab, "nodes": nodes, "fd": fd}[a.what](a)


if __name__ == "__main__":
    main()
