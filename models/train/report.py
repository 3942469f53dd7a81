"""Writes models/REPORT.md and its plots from the per-run results (no training, no sampling).

Inputs: the list of run records (make_all.collect), the gate CSVs in models/report/ and, for
the scatter plot, the seed-0 samples under models/train/runs/ (if absent, the existing PNG
is kept). Everything in REPORT.md is generated: edit this file, not the Markdown. The sections
after the 2D training report are the Markdown files in models/report/sections/ in name order,
copied verbatim (each says which command wrote its tables).
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from statistics import mean, stdev

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import atomic  # noqa: E402

DATASETS = ("circle", "dino", "line", "moons")  # the paper's table order
ARCHS = ("baseline", "dualscale")
PUBLISHED = {  # paper.md table: KL bits; inference s on one GPU
    "circle": {"baseline": 0.354, "dualscale": 0.345, "baseline_infer_s": 0.172, "dualscale_infer_s": 0.293},
    "dino": {"baseline": 0.989, "dualscale": 0.862, "baseline_infer_s": 0.171, "dualscale_infer_s": 0.278},
    "line": {"baseline": 0.161, "dualscale": 0.153, "baseline_infer_s": 0.160, "dualscale_infer_s": 0.274},
    "moons": {"baseline": 0.0896, "dualscale": 0.0933, "baseline_infer_s": 0.168, "dualscale_infer_s": 0.265},
}
COLORS = {"circle": "tab:blue", "dino": "tab:green", "line": "tab:orange", "moons": "tab:red"}
START_LABEL = {"normal": "x_T ~ N(0, I) (as published)",
               "moment": "x_T ~ N(sqrt(abar_T) mean, abar_T cov + (1-abar_T) I) (moment-matched)"}


_atomic_write = atomic.write_bytes


def _save_fig(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    plt.close(fig)
    _atomic_write(path, buf.getvalue())


def _vals(runs, ds, arch, key):
    return [r[key] for r in runs if r["dataset"] == ds and r["arch"] == arch and r.get(key) is not None]


def _fmt_spread(v: list[float], digits: int = 3) -> str:
    if not v:
        return "-"
    if len(v) == 1:
        return f"{v[0]:.{digits}f} (1 seed)"
    return f"{mean(v):.{digits}f} [{min(v):.{digits}f}, {max(v):.{digits}f}] sd {stdev(v):.{digits}f} (n={len(v)})"


def verdict(base: list[float], dual: list[float]) -> str:
    if not base or not dual:
        return "not measured yet"
    if len(base) < 2 or len(dual) < 2:
        d = mean(dual) - mean(base)
        return f"dual-scale {d:+.3f} bits vs baseline, one seed only: no spread to judge against"
    d = mean(dual) - mean(base)
    if max(dual) < min(base):
        return f"dual-scale better by {-d:.3f} bits, beyond the seed spread (ranges do not overlap)"
    if max(base) < min(dual):
        return f"baseline better by {d:.3f} bits, beyond the seed spread (ranges do not overlap)"
    return f"no difference beyond seed spread (mean difference {d:+.3f} bits, ranges overlap)"


def read_gates(report_dir: Path, ds: str) -> dict[int, dict[str, np.ndarray]]:
    out = {}
    for path in sorted(report_dir.glob(f"gates-{ds}-seed*.csv")):
        seed = int(path.stem.rsplit("seed", 1)[1])
        with open(path) as f:
            rows = list(csv.DictReader(f))
        out[seed] = {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}
    return out


def plot_gates(report_dir: Path) -> Path | None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), dpi=80, sharex=True)
    any_curve = False
    for ds in DATASETS:
        for seed, g in read_gates(report_dir, ds).items():
            any_curve = True
            kw = dict(color=COLORS[ds], lw=1.8 if seed == 0 else 1.0, alpha=1.0 if seed == 0 else 0.3,
                      label=ds if seed == 0 else None)
            axes[0].plot(g["t"], g["w_global"], **kw)
            if "contrib_global" in g:
                axes[1].plot(g["t"], g["contrib_global"], **kw)
    if not any_curve:
        plt.close(fig)
        return None
    axes[0].set_title("gate weight of the global branch, w_g(t)")
    axes[1].set_title("global share of output norm (on noisy data)")
    for ax in axes:
        ax.axhline(0.5, color="gray", lw=0.6, ls=":")
        ax.set_xlabel("timestep t (99 = most noise)")
        ax.set_ylim(0, 1)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels) + 1, fontsize=8, frameon=False,
               title="seed 0 solid, seeds 1-2 faint", title_fontsize=7)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path = report_dir / "gates.png"
    _save_fig(fig, path)
    return path


def plot_samples(runs, P, data_of) -> Path | None:
    """Seed-0 samples of every model (N(0, I) start) and of dual-scale from the moment-matched start."""
    path = P.report_dir / "samples.png"
    cols = [("baseline", "normal"), ("dualscale", "normal"), ("dualscale", "moment")]
    have = {(ds, a, st): P.runs / f"{ds}-{a}-seed0" / f"samples-{st}.npy" for ds in DATASETS for a, st in cols}
    if not any(p.exists() for p in have.values()):
        return path if path.exists() else None
    kl = {(r["dataset"], r["arch"], st): r.get(f"kl_bits_{st}") for r in runs if r["seed"] == 0
          for st in ("normal", "moment")}
    fig, axes = plt.subplots(len(DATASETS), 1 + len(cols), figsize=(10, 10), dpi=60)
    for i, ds in enumerate(DATASETS):
        panels = [("data (10k of 100k)", data_of(ds)[:10_000])]
        for a, st in cols:
            p = have[(ds, a, st)]
            value = kl.get((ds, a, st))
            label = f"{a}, {'N(0,I)' if st == 'normal' else 'matched'} start" + (
                f", KL {value:.3f}" if value is not None else "")
            panels.append((label, np.load(p) if p.exists() else None))
        for j, (label, x) in enumerate(panels):
            ax = axes[i, j]
            if x is not None:
                ax.scatter(x[:, 0], x[:, 1], s=0.6, alpha=0.35, color="black", rasterized=True, linewidths=0)
            else:
                ax.text(0.5, 0.5, "not trained yet", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlim(-5, 5)
            ax.set_ylim(-5, 5)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{ds}: {label}", fontsize=7)
    fig.tight_layout()
    _save_fig(fig, path)
    return path


def _gate_table(report_dir: Path) -> tuple[list[str], list[str], dict[str, bool]]:
    lines = ["| dataset | seeds | w_g(t=99) | w_g(t=50) | w_g(t=0) | global share of output t=99 | t=0 |",
             "|---|---|---|---|---|---|---|"]
    findings = []
    pattern = {}
    for ds in DATASETS:
        g = read_gates(report_dir, ds)
        if not g:
            continue
        col = lambda key, t: [v[key][t] for v in g.values() if key in v]  # noqa: E731
        w99, w50, w0 = col("w_global", 99), col("w_global", 50), col("w_global", 0)
        c99, c0 = col("contrib_global", 99), col("contrib_global", 0)
        rng = lambda v: f"{mean(v):.2f} [{min(v):.2f}, {max(v):.2f}]" if v else "-"  # noqa: E731
        lines.append(f"| {ds} | {len(g)} | {rng(w99)} | {rng(w50)} | {rng(w0)} | {rng(c99)} | {rng(c0)} |")
        late_share = (f" The global branch's share of the output goes from {mean(c99):.2f} at t=99 to "
                      f"{mean(c0):.2f} at t=0 (mean over seeds).") if c99 and c0 else ""
        early_global = all(v > 0.5 for v in w99)
        late_local = all(v < 0.5 for v in w0)
        rises = all(a > b for a, b in zip(w99, w0))
        pattern[ds] = early_global and late_local
        findings.append(
            f"- **{ds}**: global dominates at high noise (w_g(99) > 0.5 in every seed): "
            f"{'yes' if early_global else 'no'}; local dominates at low noise (w_g(0) < 0.5 in every seed): "
            f"{'yes' if late_local else 'no'}; w_g higher at t=99 than at t=0 in every seed: "
            f"{'yes' if rises else 'no'}.{late_share}")
    return lines, findings, pattern


def write(runs: list[dict], P, data_of, floor: dict[str, list[float]] | None = None) -> None:
    gates_png = plot_gates(P.report_dir)
    samples_png = plot_samples(runs, P, data_of)
    rel = lambda p: os.path.relpath(p, P.report_md.parent)  # noqa: E731
    n_done = len(runs)
    L = ["# 2D models: training, KL evaluation and gate weights", "",
         "Generated by `python models/train/make_all.py report` from `models/report/results.json` "
         "and the per-run results under `models/train/runs/`; do not edit by hand.", "",
         f"Runs finished: {n_done} of 24 (4 datasets x 2 architectures x seeds 0, 1, 2).", "",
         "Setup: tiny-diffusion recipe as in `shared/reference/paper.md` (T=100 linear betas, 10,000 steps, "
         "batch 256, AdamW 3e-4 cosine to 0, grad clip 0.5, EMA 0.995 every 10 steps with ema_pytorch's "
         "warm-up, sampling with the EMA weights). PyTorch on CPU, one thread, fixed seeds. "
         "Sampling: full 100-step ancestral DDPM, 10,000 points, the same random draws for both starts. "
         "KL(data || model) in bits: k=5, max norm, all 100,000 data points vs 10,000 samples. "
         "Dual-scale here embeds all 4 upscaled dims (691,986 parameters; the published code used 2 of 4).", ""]
    for start in ("normal", "moment"):
        key = f"kl_bits_{start}"
        L += [f"## KL (bits, lower is better), start {START_LABEL[start]}", "",
              "| dataset | baseline: mean [min, max] | dual-scale: mean [min, max] | published baseline | "
              "published dual-scale | true-distribution floor | reading |", "|---|---|---|---|---|---|---|"]
        for ds in DATASETS:
            b, d = _vals(runs, ds, "baseline", key), _vals(runs, ds, "dualscale", key)
            pub = PUBLISHED[ds]
            fl = (floor or {}).get(ds)
            fl_s = f"{mean(fl):.3f} [{min(fl):.3f}, {max(fl):.3f}]" if fl else "-"
            L.append(f"| {ds} | {_fmt_spread(b)} | {_fmt_spread(d)} | {pub['baseline']} | {pub['dualscale']} | "
                     f"{fl_s} | {verdict(b, d)} |")
        L.append("")
        if floor and start == "normal":
            worst = max(abs(v) for fl in floor.values() for v in fl)
            L += ["The floor is the KL of 10,000 fresh points drawn from the true distribution (the dataset "
                  "generator with seeds 1, 2, 3) against the same 100,000 data points: what a perfect model "
                  f"would score. All floors are within {worst:.3f} bits of 0, so the estimator's own bias at "
                  "these sizes is small next to the model numbers.", ""]
    L += ["## Per run", "",
          "| dataset | arch | seed | params | train s | steps/s | final loss | KL N(0,I) | KL moment | "
          "sample s (10k x 100 steps) | ONNX max abs diff |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        diff = r.get("onnx_max_abs_diff")
        diff_s = f"{max(diff.values()):.1e}" if diff else "-"
        L.append(f"| {r['dataset']} | {r['arch']} | {r['seed']} | {r['parameters']:,} | {r['train_wall_s']:.0f} | "
                 f"{r['steps_per_s']:.0f} | {r['final_loss_last500']:.4f} | {r['kl_bits_normal']:.3f} | "
                 f"{r['kl_bits_moment']:.3f} | {r['sample_wall_s_normal']:.1f} | {diff_s} |")
    L.append("")
    L += ["## Time per run on this machine", ""]
    for a in ARCHS:
        t = [r["train_wall_s"] for r in runs if r["arch"] == a]
        s = [r["sample_wall_s_normal"] for r in runs if r["arch"] == a]
        if t:
            L.append(f"- {a}: training {mean(t):.0f} s per 10k steps (range {min(t):.0f}-{max(t):.0f} s, "
                     f"{len(t)} runs), sampling 10k points x 100 steps {mean(s):.1f} s; one thread, "
                     "niceness 10, sharing 2 cores with Rust builds, so the range is mostly machine load.")
    L.append("")
    L += ["## Gate weights per timestep (dual-scale)", "",
          "The gate sees only t, so w_g(t) is one curve per model (CSVs: `models/report/gates-{dataset}-seed{s}.csv`). "
          "Because either branch can scale its own output, the weight alone is not the branch's share of the "
          "prediction; the right panel and the last two columns give the global branch's share of the "
          "output norm, E‖w_g·global‖ / (E‖w_g·global‖ + E‖w_l·local‖), on 2,000 noised data points per t.", ""]
    if gates_png:
        L += [f"![gate weights]({rel(gates_png)})", ""]
    gate_lines, findings, pattern = _gate_table(P.report_dir)
    L += gate_lines + ["", *findings, ""]
    if samples_png:
        L += ["## Samples (seed 0) vs data", "",
              "Columns: 10,000 data points; baseline and dual-scale from x_T ~ N(0, I) (as published); "
              "dual-scale from the moment-matched start (same random draws).", "",
              f"![samples]({rel(samples_png)})", ""]
    L += ["## Reading", ""]
    for start in ("normal", "moment"):
        key = f"kl_bits_{start}"
        L.append(f"- Start {START_LABEL[start]}:")
        for ds in DATASETS:
            L.append(f"  - {ds}: {verdict(_vals(runs, ds, 'baseline', key), _vals(runs, ds, 'dualscale', key))}.")
    for start in ("normal", "moment"):
        key = f"kl_bits_{start}"
        verdicts = [verdict(_vals(runs, ds, "baseline", key), _vals(runs, ds, "dualscale", key)) for ds in DATASETS]
        judged = [v for v in verdicts if "beyond" in v or "no difference" in v]
        if judged:
            L.append(f"- Summary, {start} start: dual-scale better beyond seed spread on "
                     f"{sum('dual-scale better' in v for v in judged)} of {len(judged)} datasets with several seeds, "
                     f"baseline better beyond spread on {sum('baseline better' in v for v in judged)}, "
                     f"no separable difference on {sum('no difference' in v for v in judged)}.")
    gain = []
    for ds in DATASETS:
        n, m = _vals(runs, ds, "dualscale", "kl_bits_normal"), _vals(runs, ds, "dualscale", "kl_bits_moment")
        nb, mb = _vals(runs, ds, "baseline", "kl_bits_normal"), _vals(runs, ds, "baseline", "kl_bits_moment")
        if n and m and nb and mb:
            gain.append(f"{ds} {mean(nb + n) - mean(mb + m):+.3f}")
    if gain:
        L.append("- Moment-matched start vs N(0, I) start, KL reduction averaged over both architectures "
                 f"(positive = moment-matched better): {', '.join(gain)} bits.")
    if pattern:
        yes = [ds for ds, v in pattern.items() if v]
        no = [ds for ds, v in pattern.items() if not v]
        L.append(f"- Gate: the claimed pattern (global weight > 0.5 at t=99 and < 0.5 at t=0, in every seed) holds "
                 f"for {len(yes)} of {len(pattern)} datasets ({', '.join(yes) or 'none'}); not for "
                 f"{', '.join(no) or 'none'}. Nothing in the architecture makes one branch coarse and the other "
                 "fine: both are the same MLP with scale-25 sinusoidal input embeddings, the local one on a learned "
                 "linear map of x to 4 dims, so which branch the gate favours at which noise level is learned per "
                 "dataset and run, not built in.")
    L += ["- What the dino gain comes from is not established by these runs: the dual-scale model has 2.3x the "
          "parameters and its local branch embeds four learned projections of x (more sinusoidal feature "
          "directions than the baseline's two axes). A capacity-matched baseline and a fixed-gate (0.5/0.5) "
          "ablation would separate capacity, features and gating; the gate curves, which differ from seed to "
          "seed, argue against a particular gate schedule being the cause.",
          "- The N(0, I) start is off-distribution (abar at t=99 is 0.364, so x_99 still carries 60% of the data's "
          "scale). Starting from the forward process's own moments removes most of the KL on line and moons "
          "(down to the true-distribution floor) for both architectures; on circle and dino the remaining error "
          "is the model's."]
    L += ["", "## Notes and deviations", "",
          "- Published numbers come from single unseeded GPU runs (paper.md: two identical dino runs gave "
          "1.034 and 0.862), so a published difference smaller than our seed spread is not evidence either way.",
          "- Data order: per-epoch random permutation (as the template's `DataLoader(shuffle=True)`), drawn "
          "from a generator seeded by (seed, epoch); noise and timesteps from a generator seeded by (seed, step), "
          "which makes resumed runs bit-identical to uninterrupted ones.",
          "- The sinusoidal embeddings are computed as a MatMul with a constant frequency matrix and their "
          "columns grouped [sin of all dims, cos of all dims]: a fixed permutation of the first Linear's "
          "inputs, the same model family.",
          "- Inference times above are CPU, one thread, 10,000 points, not comparable with the published GPU times.",
          ""]
    for section in sorted((P.report_dir / "sections").glob("*.md")):
        L += [section.read_text().rstrip("\n"), ""]
    _atomic_write(P.report_md, "\n".join(L).encode())
