#!/usr/bin/env python
"""Few-step samplers for the shipped image model (issue 9, item 3): FD by sampler, step list, NFE.

    OMP_NUM_THREADS=1 nice -n 5 python models/train/image_samplers.py run            # every row of TABLE (python rows)
    OMP_NUM_THREADS=1 nice -n 5 python models/train/image_samplers.py run SPEC ...   # chosen rows
    python models/train/image_samplers.py run SPEC --seed 1                           # another noise draw
    python models/train/image_samplers.py grid SPEC --out PATH.png                    # 8x8 grid: the first 64 seed-0 draws
    python models/train/image_samplers.py runtime DIR --label runtime-SPEC --seed S   # score dualscale's PNGs
    python models/train/image_samplers.py table                                       # markdown table

A SPEC is `SAMPLER:LIST:N`, e.g. `dpmpp-2m:power2:10`, `ddim-eta0.5:trailing:20`, `ddpm:trailing:100`.
Samplers (numpy ports of src/sampler/*.rs, the runtime's math: f64 abar, f32 state between steps,
no clipping): `ddim` (= `ddim-eta0`), `ddim-etaE`, `ddpm`, `dpmpp-2m`, `dpmpp-3m`, `unipc`
(bh2, order 2), and `sde-dpmpp-2m` (diffusers' `sde-dpmsolver++`, midpoint; not in the runtime).
Suffix `+clip` clips every x0 prediction to [-1, 1] (the runtime never clips).
Lists (N integer timesteps, high to low; the last step always goes to clean data):
`trailing`, `leading`, `linspace` (the runtime's spacings; the multistep solvers get the runtime's
multistep variant of leading / linspace), `powerR` (t_i = round(999 ((N - i)/N)^R); R = 1 is
trailing), `karrasR-Smax` (first step at t = 999, then N - 1 Karras points with rho R from VE sigma
Smax down to sigma(t = 0) or `-Smin`, each mapped to the integer t of nearest log VE sigma), `karrasxR-Smax`
(N Karras points, no step at 999), `logsnr-Tlo` (999, then N - 1 points uniform in log-SNR from
t = 900 down to t = Tlo), `lam-A-B` (999, then N - 1 points uniform in log-SNR from t = A down to
t = B), `lamx-A-B` (N points uniform in log-SNR from t = A to t = B, no step at 999; the start is
still N(0, I), which at t = A >= 990 (abar <= 2e-4) is the runtime's `--init unit`), or an
explicit list `999,700,...`.

Every row: 2,000 samples from N(0, I) drawn with torch.Generator().manual_seed(10000 + seed)
(seed 0 = the same x_T as image_eval.evaluate_run; the stochastic samplers draw their step noise
from the same generator afterwards), the shipped models/landscape-dualscale.onnx through
onnxruntime (one thread), FD against the 2,000 held-out images with image_eval.features /
image_eval.frechet (so numbers compare with fd-sanity.json and result.json), palette fractions
(day / golden / dusk / night) by a 5-NN classifier on 8x8-cell colour means trained on 10,000
labelled training images (100% accurate on the held-out set), and a texture statistic (mean
|x - blur(x)|, 1 px Gaussian, relative to the held-out set). Rows are appended to
models/report/image-samplers.json; a row already there (same spec, seed, count) is skipped.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import image_eval  # noqa: E402
import landscapes  # noqa: E402
import make_images  # noqa: E402

ONNX = make_images.MODELS / "landscape-dualscale.onnx"
OUT_JSON = make_images.REPORT / "image-samplers.json"
T = 1000
N_IMAGES = image_eval.N_FD
PALETTES = landscapes.PALETTES

# the rows of the report, (spec, seed): `run` with no SPEC runs them all (about 1,100 NFE x 2,000
# images: ~45 min on one idle core of this machine, ~2 h shared)
_S0 = (
    # runtime spacings and samplers as they are
    [f"{s}:trailing:{n}" for s in ("ddim", "dpmpp-2m") for n in (5, 10, 20)]
    + ["dpmpp-3m:trailing:5", "dpmpp-3m:trailing:10", "unipc:trailing:10", "ddpm:trailing:10",
       "ddim-eta0.5:trailing:10", "sde-dpmpp-2m:trailing:10", "unipc:power2:10", "unipc:logsnr-0:10"]
    # 10 NFE: lists with steps in t = 960-999
    + [f"unipc:{lst}:10" for lst in ("lam-990-0", "lamx-990-0", "lam-980-5", "lamx-990-10", "lamx-985-20",
                                      "karras7-80", "karras5-80", "karras7-200", "karras7-80-0.05")]
    + ["dpmpp-2m:lam-990-0:10", "dpmpp-2m:karras7-80:10", "sde-dpmpp-2m:lam-990-0:10",
       "sde-dpmpp-2m:karras7-80:10", "ddim:lam-990-0:10"]
    # 5 NFE
    + [f"unipc:{lst}:5" for lst in ("karras7-80", "karrasx7-80", "karrasx7-80-0.05", "karrasx5-80-0.05",
                                     "karrasx7-40-0.05", "karrasx7-80-0.1", "karrasx7-160-0.05", "lamx-990-25",
                                     "lamx-985-40", "lamx-990-50", "lamx-980-25", "lamx-980-50", "lamx-995-50",
                                     "lamx-990-70", "lamx-993-60")]
    + ["dpmpp-3m:karrasx7-80-0.05:5", "dpmpp-3m:lamx-990-25:5", "dpmpp-3m:lamx-990-50:5"]
    # 20 NFE, the ODE limit (40) and the reference
    + ["unipc:karras7-80:20", "unipc:lam-990-0:20", "unipc:karras7-80-0.05:20", "sde-dpmpp-2m:karras7-80:20",
       "unipc:karras7-80:40", "ddpm:trailing:100"]
)
_S1 = ["unipc:karras7-80:10", "unipc:lamx-990-50:5", "unipc:lam-990-0:20", "unipc:karras7-80:20", "ddpm:trailing:100"]
TABLE = [(spec, 0) for spec in _S0] + [(spec, 1) for spec in _S1]


# ---------------------------------------------------------------- schedule and step lists

def alphas_cumprod() -> np.ndarray:
    """src/schedule.rs: squaredcos_cap_v2 betas and their cumulative product, in f64."""
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = np.array([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)])
    return np.cumprod(1 - betas)


ABAR = alphas_cumprod()
VE = np.sqrt((1 - ABAR) / ABAR)          # VE sigma, increasing in t
LAM = -np.log(VE)                        # half log-SNR, decreasing in t


def _t_for_ve(s: float) -> int:
    return int(np.argmin(np.abs(np.log(VE) - math.log(s))))


def _t_for_lam(lam: float) -> int:
    return int(np.argmin(np.abs(LAM - lam)))


def _check(ts: list[int], name: str) -> list[int]:
    if any(b >= a for a, b in zip(ts, ts[1:])) or ts[0] > T - 1 or ts[-1] < 0:
        raise ValueError(f"{name}: not strictly decreasing inside [0, {T - 1}]: {ts}")
    return ts


def step_list(name: str, n: int, multistep: bool) -> list[int]:
    """The N integer timesteps of a list name (see the module docstring), high to low."""
    if "," in name:
        return _check([int(v) for v in name.split(",")], name)
    if name == "trailing":
        return _check([int(np.round(v)) - 1 for v in np.arange(T, 0, -T / n)[:n]], name)
    if name == "leading":
        r = T // (n + 1) if multistep else T // n
        return _check([i * r for i in (range(n, 0, -1) if multistep else range(n - 1, -1, -1))], name)
    if name == "linspace":
        v = np.linspace(0, T - 1, n + 1 if multistep else n)[::-1]
        return _check([int(x) for x in np.round(v)[:n]], name)
    if name.startswith("power"):
        rho = float(name[5:])
        return _check([int(round((T - 1) * ((n - i) / n) ** rho)) for i in range(n)], name)
    if name.startswith("karras"):              # karrasR-Smax: 999 + N-1 Karras points; karrasxR-Smax: N points
        x = name.startswith("karrasx")
        rho, smax, *rest = (float(v) for v in name[7 if x else 6:].split("-"))
        smin = rest[0] if rest else VE[0]
        k = np.arange(n if x else n - 1) / max((n if x else n - 1) - 1, 1)
        sig = (smax ** (1 / rho) + k * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
        return _check(([] if x else [T - 1]) + [_t_for_ve(s) for s in sig], name)
    if name.startswith("lam"):                 # lam-A-B: 999 + N-1 uniform in log-SNR from t=A to t=B;
        a, b = (int(v) for v in name.split("-")[1:])   # lamx-A-B: N points from t=A (no t=999 step)
        k = n - 1 if name.startswith("lam-") else n
        lams = [_t_for_lam(v) for v in np.linspace(LAM[a], LAM[b], k)]
        return _check(([T - 1] if name.startswith("lam-") else []) + lams, name)
    if name.startswith("logsnr"):
        lo = int(name.split("-")[1])
        lams = np.linspace(LAM[900], LAM[lo], n - 1)
        return _check([T - 1] + [_t_for_lam(v) for v in lams], name)
    raise ValueError(f"unknown step list {name!r}")


# ---------------------------------------------------------------- the model and the samplers

class Model:
    """The shipped ONNX through onnxruntime, one thread; counts evaluations per image."""

    def __init__(self, path: Path = ONNX, batch: int = 500):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.batch, self.nfe = batch, 0

    def v(self, x32: np.ndarray, t: int) -> np.ndarray:
        return self.sess.run(["v"], {"x": x32, "t": np.full(len(x32), t, np.float32)})[0]

    def x0_eps(self, x: np.ndarray, t: int, clip: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(x0, eps) in f64 from the v output at integer timestep t (src/sampler/mod.rs x0_and_eps)."""
        x32 = x.astype(np.float32)
        v = np.concatenate([self.v(x32[i:i + self.batch], t)
                            for i in range(0, len(x32), self.batch)]).astype(np.float64)
        self.nfe += 1
        a, s = math.sqrt(ABAR[t]), math.sqrt(1 - ABAR[t])
        xd = x32.astype(np.float64)
        x0 = a * xd - s * v
        if clip:
            x0 = np.clip(x0, -1, 1)
            return x0, (xd - a * x0) / s
        return x0, a * v + s * xd


class TorchModel(Model):
    """A trained PyTorch image model (an EMA checkpoint, e.g. another training seed) in place of the
    shipped file, so its samples go through the same sampler code."""

    def __init__(self, module: torch.nn.Module, batch: int = 500):
        self.module, self.batch, self.nfe = module, batch, 0

    @torch.no_grad()
    def v(self, x32: np.ndarray, t: int) -> np.ndarray:
        import image_nets
        return image_nets.output_of(self.module, torch.from_numpy(x32), torch.full((len(x32),), float(t))).numpy()


def _level(t: int | None) -> tuple[float, float]:
    """(alpha, sigma) of timestep t; clean data for None."""
    return (1.0, 0.0) if t is None else (math.sqrt(ABAR[t]), math.sqrt(1 - ABAR[t]))


def _lam(t: int | None) -> float:
    return math.inf if t is None else float(LAM[t])


def ddim(model, ts, x, gen, eta=0.0, clip=False):
    """src/sampler/ddim.rs (Lookup: step i goes to ts[i+1], the last to abar = 1)."""
    for i, t in enumerate(ts):
        x0, eps = model.x0_eps(x, t, clip)
        a_t, a_p = ABAR[t], (ABAR[ts[i + 1]] if i + 1 < len(ts) else 1.0)
        s = eta * math.sqrt((1 - a_p) / (1 - a_t) * (1 - a_t / a_p))
        nxt = math.sqrt(a_p) * x0 + math.sqrt(max(1 - a_p - s * s, 0.0)) * eps
        if s > 0:
            nxt = nxt + s * _randn(gen, x.shape)
        x = nxt.astype(np.float32)
    return x


def ddpm(model, ts, x, gen, clip=False):
    """src/sampler/ddpm.rs: posterior mean + beta-tilde noise, none at the last step."""
    for i, t in enumerate(ts):
        last = i + 1 == len(ts)
        x0, _ = model.x0_eps(x, t, clip)
        a_t, a_p = ABAR[t], (1.0 if last else ABAR[ts[i + 1]])
        beta = 1 - a_t / a_p
        nxt = (math.sqrt(a_p) * beta / (1 - a_t)) * x0 + (math.sqrt(a_t / a_p) * (1 - a_p) / (1 - a_t)) * x
        if not last:
            nxt = nxt + math.sqrt(max((1 - a_p) / (1 - a_t) * beta, 1e-20)) * _randn(gen, x.shape)
        x = nxt.astype(np.float32)
    return x


def dpmpp(model, ts, x, gen, order=2, clip=False, sde=False):
    """src/sampler/dpm_solver.rs (orders 2, 3; lower order at the first and last steps, order <= 2 at
    the second-to-last when N < 15). sde=True: diffusers' sde-dpmsolver++ (order <= 2, midpoint):
    x_t = (sigma_t/sigma_s) e^-h x + alpha_t (1 - e^-2h) (m0 + D1/2) + sigma_t sqrt(1 - e^-2h) z."""
    n = len(ts)
    nxt_t = list(ts[1:]) + [None]
    m: list[np.ndarray] = []
    for i, t in enumerate(ts):
        x0, _ = model.x0_eps(x, t, clip)
        m.insert(0, x0)
        del m[order:]
        last, second_last = i + 1 == n, i + 2 == n and n < 15
        p = 1 if last else (min(len(m), 2) if second_last else len(m))
        (a_s, s_s), (a_t, s_t) = _level(t), _level(nxt_t[i])
        h = _lam(nxt_t[i]) - _lam(t)
        if sde:
            if last:
                x = x0.astype(np.float32)      # sigma_t = 0: the SDE step lands on m0
                continue
            em = math.exp(-h)
            d = m[0] if p == 1 else m[0] + 0.5 * (m[0] - m[1]) / ((_lam(t) - _lam(ts[i - 1])) / h)
            x = (s_t / s_s * em * x + a_t * (1 - em * em) * d
                 + s_t * math.sqrt(1 - em * em) * _randn(gen, x.shape)).astype(np.float32)
            continue
        ratio = 0.0 if s_t == 0 else s_t / s_s
        a_phi = a_t * math.expm1(-h) if math.isfinite(h) else -a_t
        if p == 1:
            nxt = ratio * x - a_phi * m[0]
        elif p == 2:
            r0 = (_lam(t) - _lam(ts[i - 1])) / h
            nxt = ratio * x - a_phi * m[0] - 0.5 * a_phi * (m[0] - m[1]) / r0
        else:
            r0 = (_lam(t) - _lam(ts[i - 1])) / h
            r1 = (_lam(ts[i - 1]) - _lam(ts[i - 2])) / h
            phi = math.expm1(-h)
            c1, c2 = a_t * (phi / h + 1), a_t * ((phi + h) / (h * h) - 0.5)
            d10, d11 = (m[0] - m[1]) / r0, (m[1] - m[2]) / r1
            d1, d2 = d10 + r0 / (r0 + r1) * (d10 - d11), (d10 - d11) / (r0 + r1)
            nxt = ratio * x - a_phi * m[0] + c1 * d1 - c2 * d2
        x = nxt.astype(np.float32)
    return x


def unipc(model, ts, x, gen, order=2, clip=False, record: dict | None = None):
    """src/sampler/unipc.rs, bh2, order 2 (p <= 2: rho = 1/2 closed forms). `record`: a dict whose
    keys are timesteps of `ts`; each gets the state at that timestep (after its corrector step)."""
    n = len(ts)
    lv = [_level(t) for t in ts] + [(1.0, 0.0)]
    lam = [_lam(t) for t in ts] + [math.inf]
    m: list[np.ndarray] = []
    last = None

    def coef(s0, p):
        h = lam[s0 + 1] - lam[s0]
        hh = -h
        h_phi_1 = math.expm1(hh)
        b_h = h_phi_1
        b, fac, hpk = [], 1.0, h_phi_1 / hh - 1.0
        for k in range(1, p + 1):
            b.append(hpk * fac / b_h)
            fac *= k + 1
            hpk = hpk / hh - 1.0 / fac
        return h, h_phi_1, b_h, b

    def base(xs, s0, h_phi_1):
        (_, s_s), (a_t, s_t) = lv[s0], lv[s0 + 1]
        return s_t / s_s * xs.astype(np.float64) - a_t * h_phi_1 * m[0]

    for i, t in enumerate(ts):
        x0, _ = model.x0_eps(x, t, clip)
        if last is not None:                      # UniC-p with the new output
            xl, p = last
            s0 = i - 1
            h, h_phi_1, b_h, b = coef(s0, p)
            at = lv[s0 + 1][0]
            if p == 1:
                rho, res = [0.5], 0.0
            else:                                  # p = 2: R = [[1, 1], [r1, 1]], b = [b1, b2]
                r1 = (lam[s0 - 1] - lam[s0]) / h
                rho1 = (b[0] - b[1]) / (1 - r1)
                rho = [rho1, b[0] - rho1]
                res = rho[0] * (m[1] - m[0]) / r1
            x = (base(xl, s0, h_phi_1) - at * b_h * (res + rho[-1] * (x0 - m[0]))).astype(np.float32)
        if record is not None and t in record:
            record[t] = x.copy()
        m.insert(0, x0)
        del m[order:]
        p = min(order, n - i, len(m))
        h, h_phi_1, b_h, b = coef(i, p)
        at = lv[i + 1][0]
        nxt = base(x, i, h_phi_1)
        if p == 2:
            r1 = (lam[i - 1] - lam[i]) / h
            nxt = nxt - at * b_h * 0.5 * (m[1] - m[0]) / r1
        last = (x.copy(), p)
        x = nxt.astype(np.float32)
    return x


def _randn(gen: torch.Generator, shape) -> np.ndarray:
    return torch.randn(shape, generator=gen, dtype=torch.float64).numpy()


def parse(spec: str):
    """SPEC -> (sampler function with its options, timestep list, NFE)."""
    sampler, lst, n = spec.split(":")
    n = int(n)
    clip = sampler.endswith("+clip")
    sampler = sampler.removesuffix("+clip")
    multistep = sampler in ("dpmpp-2m", "dpmpp-3m", "unipc", "sde-dpmpp-2m")
    ts = step_list(lst, n, multistep)
    if "," in lst and len(ts) != n:
        raise ValueError(f"{spec}: {len(ts)} timesteps listed, N = {n}")
    if sampler == "ddpm":
        fn = lambda m, ts, x, g: ddpm(m, ts, x, g, clip=clip)  # noqa: E731
    elif sampler.startswith("ddim"):
        eta = float(sampler[8:]) if sampler.startswith("ddim-eta") else 0.0
        fn = lambda m, ts, x, g: ddim(m, ts, x, g, eta=eta, clip=clip)  # noqa: E731
    elif sampler in ("dpmpp-2m", "dpmpp-3m"):
        fn = lambda m, ts, x, g: dpmpp(m, ts, x, g, order=int(sampler[6]), clip=clip)  # noqa: E731
    elif sampler == "sde-dpmpp-2m":
        fn = lambda m, ts, x, g: dpmpp(m, ts, x, g, order=2, clip=clip, sde=True)  # noqa: E731
    elif sampler == "unipc":
        fn = lambda m, ts, x, g: unipc(m, ts, x, g, clip=clip)  # noqa: E731
    else:
        raise ValueError(f"unknown sampler {sampler!r}")
    return fn, ts, n


# ---------------------------------------------------------------- statistics

_REF: dict = {}


def _reference():
    if not _REF:
        train = make_images.images(0, make_images.N_TRAIN)
        held = make_images.images(1, make_images.N_HELDOUT)
        _REF["train"] = train
        _REF["feat"] = image_eval.features(landscapes.to_model(held), train)
        _REF["cells"] = _cells(train[:10_000])
        _REF["labels"] = np.array([np.random.default_rng([0, i]).choice(len(PALETTES), p=landscapes.PALETTE_P)
                                   for i in range(10_000)])
        _REF["texture"] = _texture(landscapes.to_model(held))
    return _REF


def _cells(u8: np.ndarray) -> np.ndarray:
    x = np.asarray(u8, dtype=np.float32) / 255
    return x.reshape(len(x), 4, 8, 4, 8, 3).mean(axis=(2, 4)).reshape(len(x), -1)


def palettes(u8: np.ndarray) -> dict:
    """Fractions of day / golden / dusk / night by 5-NN on 8x8-cell colour means."""
    ref = _reference()
    q = _cells(u8)
    d = (q ** 2).sum(1)[:, None] - 2 * q @ ref["cells"].T + (ref["cells"] ** 2).sum(1)[None]
    nn = np.argsort(d, axis=1)[:, :5]
    pred = np.array([np.bincount(ref["labels"][r], minlength=len(PALETTES)).argmax() for r in nn])
    return {k: float((pred == i).mean()) for i, k in enumerate(PALETTES)}


def _texture(x: np.ndarray) -> float:
    x = np.clip(x, -1, 1).astype(np.float32)
    return float(np.abs(x - image_eval._blur(x, 1.0)).mean())


def score(x: np.ndarray) -> dict:
    ref = _reference()
    fd = image_eval.frechet(image_eval.features(x, ref["train"]), ref["feat"])
    u8 = landscapes.from_model(x)
    return {"fd": fd, "palettes": palettes(u8), "texture_rel": _texture(x) / ref["texture"],
            "mean_brightness": float(u8.mean() / 255)}


# ---------------------------------------------------------------- runs and the table

def load_rows() -> list[dict]:
    return json.loads(OUT_JSON.read_text())["rows"] if OUT_JSON.exists() else []


def save_row(row: dict) -> None:
    """Appends one row; a lock file keeps two runs from losing each other's rows."""
    import fcntl
    ref = _reference()
    with open("/tmp/image-samplers.json.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _write_rows(load_rows() + [row], ref)


def _write_rows(rows: list[dict], ref: dict) -> None:
    make_images.atomic_write_json(OUT_JSON, {
        "model": "models/landscape-dualscale.onnx", "script": "models/train/image_samplers.py",
        "fd": "image_eval.py (LFD, 496 dims) vs the 2,000 held-out images",
        "reference_palettes_heldout": palettes(make_images.images(1, make_images.N_HELDOUT)),
        "reference_texture": ref["texture"], "rows": rows})


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores, onnxruntime 1 thread, nice 5, shared"


def sample(spec: str, seed: int, count: int) -> tuple[np.ndarray, list[int], float]:
    fn, ts, n = parse(spec)
    gen = torch.Generator().manual_seed(10_000 + seed)
    x_T = torch.randn(count, 3, 32, 32, generator=gen).numpy()
    model = Model()
    t0 = time.perf_counter()
    x = fn(model, ts, x_T, gen)
    wall = time.perf_counter() - t0
    assert model.nfe == n, (spec, model.nfe)
    if not np.all(np.isfinite(x)):
        raise RuntimeError(f"{spec}: non-finite samples")
    return x, ts, wall


def run(spec: str, seed: int, count: int) -> dict:
    done = [r for r in load_rows() if r["spec"] == spec and r["seed"] == seed and r["count"] == count]
    if done:
        return done[0]
    x, ts, wall = sample(spec, seed, count)
    sampler, lst, n = spec.split(":")
    row = {"spec": spec, "sampler": sampler, "list": lst, "timesteps": ts, "nfe": int(n), "seed": seed,
           "count": count, **score(x), "sample_wall_s": wall, "machine": machine(), "source": "python",
           "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    save_row(row)
    pal = " ".join(f"{k[0]}{v:.2f}" for k, v in row["palettes"].items())
    print(f"{spec:40s} seed {seed} FD {row['fd']:8.2f}  {pal}  tex {row['texture_rel']:.2f}  {wall:.0f}s",
          flush=True)
    return row


def runtime_row(out_dir: Path, label: str, seed: int) -> dict:
    """Scores the PNG images `dualscale generate` wrote in out_dir (8-bit, as the runtime ships them)."""
    from PIL import Image
    u8 = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(out_dir.glob("*.png"))])
    x = landscapes.to_model(u8)
    row = {"spec": label, "sampler": label.split(":")[0], "list": label.split(":")[1] if ":" in label else "",
           "nfe": int(label.split(":")[-1]) if label.split(":")[-1].isdigit() else None, "seed": seed,
           "noise": "the runtime's (Philox, --seed)",
           "count": len(x), **score(x), "machine": machine(), "source": f"dualscale generate ({out_dir})",
           "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    save_row(row)
    print(f"{label}: FD {row['fd']:.2f} {row['palettes']} tex {row['texture_rel']:.2f}", flush=True)
    return row


def table() -> str:
    """Markdown: FD by NFE per (sampler, list); seeds separated by "/", night fraction in brackets."""
    rows = [r for r in load_rows() if r["count"] == N_IMAGES]
    by: dict = {}
    for r in rows:
        key = (r["sampler"], r["list"])
        by.setdefault(key, {}).setdefault(r["nfe"], []).append(r)
    nfes = sorted({r["nfe"] for r in rows if r["nfe"]})
    lines = ["| sampler | list | " + " | ".join(f"{n} NFE" for n in nfes) + " |",
             "|---|---|" + "---|" * len(nfes)]

    def cell(rs):
        rs = sorted(rs, key=lambda r: r["seed"])
        return " / ".join(f"{r['fd']:.2f}" for r in rs) + f" ({rs[0]['palettes']['night']:.2f})"

    for (smp, lst), d in sorted(by.items(), key=lambda kv: (kv[0][0].startswith("runtime"), kv[0])):
        name = lst if "," not in lst else "[" + lst.replace(",", ", ") + "]"
        lines.append(f"| {smp} | {name} | " + " | ".join(cell(d[n]) if n in d else "" for n in nfes) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["run", "grid", "runtime", "table", "lists"])
    ap.add_argument("specs", nargs="*")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--count", type=int, default=N_IMAGES)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--label")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.cmd == "run":
        for spec, seed in ([(sp, a.seed) for sp in a.specs] if a.specs else TABLE):
            run(spec, seed, a.count)
    elif a.cmd == "grid":
        x, ts, _ = sample(a.specs[0], a.seed, 64)
        landscapes.write_grid(a.out, landscapes.from_model(x), cols=8, scale=3)
        print(a.out, ts)
    elif a.cmd == "runtime":
        runtime_row(Path(a.specs[0]), a.label or a.specs[0], a.seed)
    elif a.cmd == "lists":
        for spec in a.specs:
            print(spec, parse(spec)[1])
    else:
        print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
