"""int8 variant of a 2D dual-scale (or baseline) model in a form tract 0.23.9 runs in integer arithmetic.

    python models/train/int8.py models/dino-dualscale.onnx     # writes models/dino-dualscale-int8.onnx + .json

Why this form (models/report/INT8.md has the measurements): tract runs onnxruntime's dynamic
quantization (DynamicQuantizeLinear) and QDQ (fake quantization around f32 Gemms) slower than
fp32. Its integer matmul itself is fast (i8 x i8 -> i32: VNNI on x86, SDOT/SMLAL on aarch64) and
fuses a per-column i32 bias and the zero-point correction, but every other pass around it costs:
QuantizeLinear is a scalar loop (2-3x a ReLU pass), an i32 Add is never fused into the matmul (tract
fuses same-shape adds only in f32), its int kernels store only i8/i32. The cheapest chain found:

default form, `--form cast` (tract-specific, see below): each branch keeps its residual stream in
**f32, in units of one activation step s, offset by -128.5**: h' = h / s - 128.5. Then

    h'0 = emb @ (Wx / s) + (t part + b0) / s - 128.5        f32, the fp32 model's first layer (`--first f32`)
    q   = Cast<int8>(h')                                    ReLU + quantization in one cheap pass
    h'+1 = h' + DequantizeLinear(MatMulInteger(q, W_q, zp -128) + round(b / (s s_w)), s_w)   per block
    out = (MatMulInteger(Cast<int8>(h'3), Wf_q, zp -128) as f32) * s wf_s + bf             [N, 2]

- Cast<int8>(h') is ReLU and quantization at once only because tract's float -> int8 Cast
  saturates (Rust `as`): every h <= 0 gives -128 = 0.0; for h' in [-128.5, 0) truncation towards
  zero is round-to-nearest (half down); above 0 (h beyond 128.5 steps, up to 256) it is one step
  low instead of clipped. ONNX leaves out-of-range float -> int casts undefined (onnxruntime wraps),
  so **the file is for tract**; the onnxruntime check below runs it with a Clip(-128, 127) in front
  of each such Cast, which is what tract computes.
- s is shared by all blocks of a branch (the stream needs one unit): the largest calibrated
  activation range of the branch maps to `--stream-top` steps (200: the tail uses the headroom).
- Weights: int8, symmetric, one scale per tensor (a per-channel DequantizeLinear is expanded by
  tract into 3 slow passes); the last layer (256 -> 2) per channel.
- `--first int8` quantizes the first layer too (Sin/Cos features -> QuantizeLinear 1/127 -> int8
  matmul; the t part joins as a fused i32 per-column add); same speed here, larger error.
- `--form i32`: a standard-ONNX variant: int32 residual stream (scale S = s_a s_w for every layer),
  QuantizeLinear(i32 -> i8, zero point -128 = ReLU), MatMulInteger, i32 Adds. Slower (QuantizeLinear).
- Kept in f32: the sinusoidal embeddings and the MatMul before them (arguments up to ~400), the
  t path (time embedding, t part of each first layer, gate), the upscale Linear, the final mix.

Activation ranges are calibrated once from the model's own inputs: x_t = sqrt(abar_t) x0 +
sqrt(1 - abar_t) eps at random t, x0 from models/data/{dataset}.npy, with the manifest's schedule.

The file is checked against the fp32 model with onnxruntime and with tract (python binding of the
runtime's version), and written with a manifest copied from the fp32 one (`precision: int8`, a
`converted_from` block with the form, the calibration settings and the errors found).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- graph structure

def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class Graph:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.g = model.graph
        self.inits = {t.name: numpy_helper.to_array(t) for t in self.g.initializer}
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in self.g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def const(self, name):
        if name in self.inits:
            return self.inits[name]
        n = self.producer.get(name)
        if n is not None and n.op_type == "Constant":
            return numpy_helper.to_array(_attrs(n)["value"])
        return None


def find_branches(G: Graph) -> list[dict]:
    """Each MLP branch: first layer (MatMul of the x embedding + t part), residual blocks
    (Relu -> Gemm -> Add), final Relu -> Gemm. Returns a description per branch."""
    branches = []
    for n in G.g.node:
        # the first layer: Add(MatMul(emb_concat, w_x_T), Add(MatMul(t_emb, w_t_T), bias))
        if n.op_type != "Add":
            continue
        ins = [G.producer.get(i) for i in n.input]
        if not all(p is not None for p in ins):
            continue
        mm = [p for p in ins if p.op_type == "MatMul" and p.input[1] in G.inits
              and G.producer.get(p.input[0]) is not None and G.producer[p.input[0]].op_type == "Concat"]
        other = [p for p in ins if p not in mm]
        if len(mm) != 1 or len(other) != 1 or other[0].op_type != "Add":
            continue
        first_mm = mm[0]
        emb = first_mm.input[0]
        concat = G.producer[emb]
        if not all(G.producer[i].op_type in ("Sin", "Cos") for i in concat.input):
            continue
        h = n.output[0]
        blocks = []
        final = None
        while True:
            relus = [c for c in G.consumers.get(h, []) if c.op_type == "Relu"]
            assert len(relus) == 1, h
            relu = relus[0]
            gemm = G.consumers[relu.output[0]]
            assert len(gemm) == 1 and gemm[0].op_type == "Gemm", relu.name
            gemm = gemm[0]
            a = _attrs(gemm)
            assert a.get("transB", 0) == 1 and a.get("alpha", 1.0) == 1.0 and a.get("beta", 1.0) == 1.0
            adds = [c for c in G.consumers.get(h, []) if c.op_type == "Add"]
            nxt = [c for c in G.consumers.get(gemm.output[0], []) if c.op_type == "Add" and h in c.input]
            if nxt:
                blocks.append(dict(relu=relu, gemm=gemm, add=nxt[0], h_in=h))
                h = nxt[0].output[0]
            else:
                final = dict(relu=relu, gemm=gemm, h_in=h)
                break
        branches.append(dict(first_add=n, first_mm=first_mm, emb=emb, t_part=other[0].output[0],
                             h0=n.output[0], blocks=blocks, final=final))
    assert branches, "no MLP branch found"
    return branches


# ----------------------------------------------------------------------------- calibration

def schedule_abar(manifest: dict) -> np.ndarray:
    s = manifest["scheduler"]
    kind, n = s.get("beta_schedule", "linear"), s["num_train_timesteps"]
    if kind == "linear":
        betas = np.linspace(s["beta_start"], s["beta_end"], n, dtype=np.float32).astype(np.float64)
    elif kind == "squaredcos_cap_v2":   # diffusers' betas_for_alpha_bar (cosine)
        f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
        i = np.arange(n, dtype=np.float64)
        betas = np.minimum(1 - f((i + 1) / n) / f(i / n), 0.999)
    else:
        raise SystemExit(f"schedule {kind!r} not handled")
    return np.cumprod(1.0 - betas)


def calib_inputs(manifest: dict, batches: int, points: int, seed: int):
    """(x_t, t) pairs: x0 from the dataset, t uniform over the schedule; 2D models: one t per call
    (their t is [1]); image models: one t per image (t is [N]), x0 rendered by landscapes.py (set
    `seed + 100`, never a training or held-out image set), `points` images per call."""
    abar = schedule_abar(manifest)
    rng = np.random.default_rng(seed)
    if manifest["kind"] == "image":
        import landscapes
        data = landscapes.to_model(landscapes.make(batches * points, seed=seed + 100))
    else:
        data = np.load(REPO / "models" / "data" / f"{manifest['dataset']}.npy").astype(np.float32)
    out = []
    for k in range(batches):
        if manifest["kind"] == "image":
            t = rng.integers(0, len(abar), points)
            x0 = data[k * points:(k + 1) * points]
            a = abar[t].reshape(-1, 1, 1, 1)
        else:
            t = np.array([rng.integers(0, len(abar))])
            x0 = data[rng.integers(0, len(data), points)]
            a = abar[t[0]]
        eps = rng.standard_normal(x0.shape).astype(np.float32)
        xt = (np.sqrt(a) * x0 + np.sqrt(1 - a) * eps).astype(np.float32)
        out.append((xt, t.astype(np.float32)))
    return out


def _session(model_or_path):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def collect(model: onnx.ModelProto, names: list[str], feeds) -> dict[str, list[np.ndarray]]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for nm in names:
        if nm not in have:
            m.graph.output.append(helper.make_empty_tensor_value_info(nm))
    sess = _session(m)
    outs = [o.name for o in sess.get_outputs()]
    got = {nm: [] for nm in names}
    for x, t in feeds:
        r = dict(zip(outs, sess.run(None, {"x": x, "t": t})))
        for nm in names:
            got[nm].append(r[nm])
    return got


# ----------------------------------------------------------------------------- conversion

def sym_scale(w: np.ndarray, axis=None) -> np.ndarray:
    m = np.abs(w).max(axis=axis)
    return np.maximum(m, 1e-12) / 127.0


def q8(w: np.ndarray, scale) -> np.ndarray:
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8)


def convert(src: Path, dst: Path, manifest: dict, percentile: float, batches: int, points: int, seed: int,
            first: str = "f32", form: str = "cast", stream_top: float = 200.0,
            emb_mode: str = "concat-f32") -> dict:
    model = onnx.load(str(src))
    G = Graph(model)
    branches = find_branches(G)

    # --- calibration: ranges of relu(h) entering every quantized layer
    stream = []
    for b in branches:
        stream += [b["h0"]] + [blk["add"].output[0] for blk in b["blocks"]]
    feeds = calib_inputs(manifest, batches, points, seed)
    acts = collect(model, stream, feeds)
    act_hi = {}
    for nm in stream:
        v = np.concatenate([a.ravel() for a in acts[nm]])
        v = v[v > 0]
        act_hi[nm] = float(np.percentile(v, percentile)) if percentile < 100 else float(v.max())

    new_nodes = []
    new_inits = []
    removed = set()

    def init(name, arr):
        new_inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    report = {"branches": []}
    for bi, b in enumerate(branches):
        p = f"q{bi}"
        if form == "cast":
            removed |= branch_cast_form(G, b, p, act_hi, stream_top, new_nodes, init, report, first, emb_mode)
            continue
        # layers writing the i32 stream: first (emb), then the residual blocks
        w_first = G.inits[b["first_mm"].input[1]]                       # [K, 256]
        ws = [w_first] + [G.inits[blk["gemm"].input[1]].T for blk in b["blocks"]]   # [K, 256] each
        biases = [None] + [G.inits[blk["gemm"].input[2]] for blk in b["blocks"]]
        a_opt = [1.0 / 127.0 if first == "int8" else None] + [act_hi[h] / 255.0 for h in [b["h0"]] + [blk["add"].output[0] for blk in b["blocks"][:-1]]]
        w_opt = [float(sym_scale(w)) for w in ws]
        if first != "int8":  # the f32 first layer sets no constraint on S
            a_opt[0], w_opt[0] = a_opt[1], w_opt[1]
        prods = [a * w for a, w in zip(a_opt, w_opt)]
        S = max(prods)
        a_sc = [a * np.sqrt(S / pr) for a, pr in zip(a_opt, prods)]
        w_sc = [S / a for a in a_sc]
        report["branches"].append({"S": S, "act_scale": a_sc, "weight_scale": w_sc,
                                   "slack": [S / pr for pr in prods]})

        if first == "int8":
            # first layer in int8: the sinusoidal features quantized (scale s_e, zero point 0)
            eq = new_node("QuantizeLinear", [b["emb"], init(f"{p}.e_scale", np.float32(a_sc[0])), init(f"{p}.zp0", np.int8(0))],
                          f"{p}.emb_q", new_nodes)
            wq0 = init(f"{p}.w0_q", q8(ws[0], w_sc[0]))
            acc0 = new_node("MatMulInteger", [eq, wq0], f"{p}.acc0", new_nodes)
            # t part (incl. bias) in f32 [1,256] -> i32 at scale S
            tdiv = new_node("Div", [b["t_part"], init(f"{p}.S", np.float32(S))], f"{p}.t_div", new_nodes)
            tround = new_node("Round", [tdiv], f"{p}.t_round", new_nodes)
            tint = new_node("Cast", [tround], f"{p}.t_i32", new_nodes, to=TensorProto.INT32)
            h = new_node("Add", [acc0, tint], f"{p}.h0", new_nodes)
        else:
            # first layer in f32 (the fp32 model's own MatMul, its weights and t part divided by S),
            # then cast to the i32 stream: truncation, an error of at most S (1/300 or less of an
            # activation step)
            w0s = init(f"{p}.w0_over_S", (ws[0] / S).astype(np.float32))
            mm = new_node("MatMul", [b["emb"], w0s], f"{p}.mm0", new_nodes)
            tdiv = new_node("Div", [b["t_part"], init(f"{p}.S", np.float32(S))], f"{p}.t_div", new_nodes)
            h0f = new_node("Add", [mm, tdiv], f"{p}.h0_f32", new_nodes)
            h = new_node("Cast", [h0f], f"{p}.h0", new_nodes, to=TensorProto.INT32)
        removed |= {id(b["first_mm"]), id(b["first_add"])}

        zp_relu = init(f"{p}.zp_relu", np.int8(-128))
        for k, blk in enumerate(b["blocks"], start=1):
            rq = new_node("QuantizeLinear", [h, init(f"{p}.r{k}_scale", np.float32(a_sc[k] / S)), zp_relu],
                          f"{p}.r{k}_q", new_nodes)
            acc = new_node("MatMulInteger", [rq, init(f"{p}.w{k}_q", q8(ws[k], w_sc[k])), zp_relu],
                           f"{p}.acc{k}", new_nodes)
            bint = init(f"{p}.b{k}_i32", np.rint(biases[k] / S).astype(np.int32))
            accb = new_node("Add", [acc, bint], f"{p}.accb{k}", new_nodes)
            h = new_node("Add", [accb, h], f"{p}.h{k}", new_nodes)
            removed |= {id(blk["relu"]), id(blk["gemm"]), id(blk["add"])}

        # final layer 256 -> 2, per-channel weights, out of the integer domain
        fin = b["final"]
        wf = G.inits[fin["gemm"].input[1]].T                                # [256, 2]
        bf = G.inits[fin["gemm"].input[2]]
        h_last = [b["h0"]] + [blk["add"].output[0] for blk in b["blocks"]]
        af = act_hi[h_last[-1]] / 255.0
        wf_sc = sym_scale(wf, axis=0)                                       # [2]
        rq = new_node("QuantizeLinear", [h, init(f"{p}.rf_scale", np.float32(af / S)), zp_relu], f"{p}.rf_q", new_nodes)
        acc = new_node("MatMulInteger", [rq, init(f"{p}.wf_q", q8(wf, wf_sc)), zp_relu], f"{p}.accf", new_nodes)
        accf = new_node("Cast", [acc], f"{p}.accf_f32", new_nodes, to=TensorProto.FLOAT)
        sc = new_node("Mul", [accf, init(f"{p}.f_scale", (af * wf_sc).astype(np.float32))], f"{p}.f_scaled", new_nodes)
        out = fin["gemm"].output[0]
        new_nodes.append(helper.make_node("Add", [sc, init(f"{p}.bf", bf.astype(np.float32))], [out], name=f"{p}.out"))
        removed |= {id(fin["relu"]), id(fin["gemm"])}
        report["branches"][-1]["final_act_scale"] = af

    finish(G, model, [n for n in G.g.node if id(n) not in removed] + new_nodes, new_inits, dst)
    report["act_hi"] = act_hi
    return report


def finish(G: Graph, model: onnx.ModelProto, allnodes: list, new_inits: list, dst: Path) -> None:
    """The kept f32 nodes and the new ones, sorted topologically (new nodes depend on f32 nodes and
    feed f32 nodes); what no longer leads to an output dropped; unused initializers dropped; saved."""
    nodes_sorted = toposort(allnodes, {i.name for i in G.g.input} | {t.name for t in G.g.initializer} | {t.name for t in new_inits})
    outs = {o.name for o in G.g.output}
    while True:
        consumed = {i for n in nodes_sorted for i in n.input} | outs
        alive = [n for n in nodes_sorted if any(o in consumed for o in n.output)]
        if len(alive) == len(nodes_sorted):
            break
        nodes_sorted = alive
    del G.g.node[:]
    G.g.node.extend(nodes_sorted)
    used = {i for n in nodes_sorted for i in n.input}
    keep = [t for t in G.g.initializer if t.name in used]
    del G.g.initializer[:]
    G.g.initializer.extend(keep + [t for t in new_inits if t.name in used])
    del G.g.value_info[:]
    model.producer_name = "dualscale models/train/int8.py"
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def convert_image(src: Path, dst: Path, manifest: dict, form: str, percentile: float, batches: int, points: int,
                  seed: int, stream_top: float, float_convs: tuple = ()) -> dict:
    """Image models (conv nets, x [N,3,32,32]): every Conv with constant weights, int8 weights per
    output channel (symmetric); everything else (norms, SiLU, FiLM, time path, Resize, gate) f32.

    weights: DequantizeLinear(int8 W, per-channel scale) in front of the f32 Conv. Its inputs are
    constants, so tract folds it into f32 weights when it loads the file: fp32 arithmetic and
    speed, int8 storage (standard ONNX).
    conv: ConvInteger. The activation is quantized like the 2D cast form: v = a / s + zp - 0.5,
    Cast<int8>(v) (tract's saturating, truncating Cast; on [-128.5, 0) truncation is
    round-to-nearest; above 0 one step low), per-tensor s and zero point zp from calibration (the
    range [lo, hi] spans `stream_top` steps); then Cast<f32> of the i32 result, Mul by s * s_w[c] and
    Add of the bias, per channel. Tract-specific like the 2D form.
    Convs whose node name contains one of `float_convs` stay as they are (f32 weights)."""
    model = onnx.load(str(src))
    G = Graph(model)
    convs = [n for n in G.g.node if n.op_type == "Conv" and n.input[1] in G.inits]
    assert convs, "no Conv with constant weights"
    new_nodes, new_inits, removed = [], [], set()

    def init(name, arr):
        new_inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    act = {}
    mode = {id(c): "f32" if any(k in c.name for k in float_convs) else form for c in convs}
    if "conv" in mode.values():
        feeds = calib_inputs(manifest, batches, points, seed)
        got = collect(model, sorted({c.input[0] for c in convs if mode[id(c)] == "conv"}), feeds)
        for nm, vs in got.items():
            v = np.concatenate([a.ravel() for a in vs])
            lo, hi = np.percentile(v, [100 - percentile, percentile]) if percentile < 100 else (v.min(), v.max())
            act[nm] = (min(float(lo), 0.0), max(float(hi), 0.0))
    report = {"convs": []}
    for ci, c in enumerate(convs):
        p = f"c{ci}"
        if mode[id(c)] == "f32":
            report["convs"].append({"name": c.name, "kept": "f32"})
            continue
        w = G.inits[c.input[1]]                                     # [Co, Ci, kh, kw]
        sw = sym_scale(w.reshape(len(w), -1), axis=1).astype(np.float32)      # [Co]
        wq = q8(w, sw.reshape(-1, 1, 1, 1))
        if mode[id(c)] == "weights":
            wd = new_node("DequantizeLinear", [init(f"{p}.w_q", wq), init(f"{p}.w_scale", sw), init(f"{p}.w_zp", np.zeros(len(w), np.int8))],
                          f"{p}.w", new_nodes, axis=0)
            new_nodes.append(helper.make_node("Conv", [c.input[0], wd] + list(c.input[2:]), list(c.output), name=f"{p}.conv",
                                              **_attrs(c)))
            report["convs"].append({"name": c.name, "weight_scale_max": float(sw.max())})
        else:
            lo, hi = act[c.input[0]]
            s_a = (hi - lo) / stream_top
            zp = int(np.clip(-128 + np.ceil(-lo / s_a), -128, 127))
            v = new_node("Mul", [c.input[0], init(f"{p}.x_inv_scale", np.float32(1 / s_a))], f"{p}.x_div", new_nodes)
            v = new_node("Add", [v, init(f"{p}.x_offset", np.float32(zp - 0.5))], f"{p}.x_off", new_nodes)
            q = new_node("Cast", [v], f"{p}.x_q", new_nodes, to=TensorProto.INT8)
            acc = new_node("ConvInteger", [q, init(f"{p}.w_q", wq), init(f"{p}.x_zp", np.int8(zp))], f"{p}.acc", new_nodes,
                           **{k: v for k, v in _attrs(c).items() if k != "auto_pad" or v != b"NOTSET"})
            accf = new_node("Cast", [acc], f"{p}.acc_f32", new_nodes, to=TensorProto.FLOAT)
            y = c.output[0]
            bias = G.inits[c.input[2]] if len(c.input) > 2 and c.input[2] else np.zeros(len(w), np.float32)
            sc = new_node("Mul", [accf, init(f"{p}.y_scale", (s_a * sw).reshape(1, -1, 1, 1).astype(np.float32))], f"{p}.y_scaled", new_nodes)
            new_nodes.append(helper.make_node("Add", [sc, init(f"{p}.bias", bias.reshape(1, -1, 1, 1).astype(np.float32))], [y], name=f"{p}.y"))
            report["convs"].append({"name": c.name, "act_range": [lo, hi], "act_scale": s_a, "act_zero_point": zp,
                                    "weight_scale_max": float(sw.max())})
        removed.add(id(c))
    finish(G, model, [n for n in G.g.node if id(n) not in removed] + new_nodes, new_inits, dst)
    return report


def branch_cast_form(G, b, p, act_hi, stream_top, new_nodes, init, report, first, emb_mode) -> set:
    """One branch in the "cast" form: an f32 residual stream in activation units with an offset,
    h' = h / s - 128.5, so that Cast(h') to int8 is the ReLU and the quantization at once (tract's
    float -> int Cast saturates: every h <= 0 gives -128 = 0.0; h' in [-128.5, 0) truncates to the
    nearest step; above, up to 2x the calibrated range, one step low instead of clipped)."""
    stream = [b["h0"]] + [blk["add"].output[0] for blk in b["blocks"]]
    s = max(act_hi[h] for h in stream) / stream_top
    removed = set()
    w0 = G.inits[b["first_mm"].input[1]]
    tdiv = new_node("Div", [b["t_part"], init(f"{p}.s", np.float32(s))], f"{p}.t_div", new_nodes)
    toff = new_node("Sub", [tdiv, init(f"{p}.offset", np.float32(128.5))], f"{p}.t_off", new_nodes)
    if first == "f32":
        # first layer, f32: the fp32 model's MatMul with its weights / s, t part (bias incl.) / s - 128.5
        emb = b["emb"]
        if emb_mode == "sin-phase":
            emb = sin_phase_embedding(G, b, p, new_nodes, init)
        mm = new_node("MatMul", [emb, init(f"{p}.w0_over_s", (w0 / s).astype(np.float32))], f"{p}.mm0", new_nodes)
        h = new_node("Add", [mm, toff], f"{p}.h0", new_nodes)
    else:
        # first layer, int8: the sinusoidal features quantized with QuantizeLinear (scale 1/127, zero
        # point 0; Sin and Cos each, then the int8 Concat), int8 weights; the t part joins as int32
        # (a per-column add, fused into the matmul), one DequantizeLinear gives the f32 stream
        concat = G.producer[b["emb"]]
        e_scale = init(f"{p}.e_scale", np.float32(1 / 127))
        z0 = init(f"{p}.z0", np.int8(0))
        e_step, e_zp = 1 / 127, 0
        if emb_mode == "sin-phase":
            e = sin_phase_embedding(G, b, p, new_nodes, init)
            e_q = new_node("QuantizeLinear", [e, e_scale, z0], f"{p}.emb_q", new_nodes)
        elif emb_mode in ("cast8", "cast7"):
            # Sin and Cos each scaled (and offset) in f32 and Cast to int8 (tract's Cast truncates
            # towards zero and saturates), then the int8 Concat.
            #   cast8: q = trunc(127 v), zero point 0: 8 bits, magnitudes biased down by 1/2 step
            #   cast7: q = trunc(63.5 v - 64.5) in [-128, -1], zero point -64, scale 1/63.5: all
            #          values on the negative side, where truncation is rounding (half down): 7 bits
            parts = []
            for j, i in enumerate(concat.input):
                if emb_mode == "cast8":
                    v = new_node("Mul", [i, init(f"{p}.e_mul{j}", np.float32(127))], f"{p}.emb_s{j}", new_nodes)
                else:
                    v = new_node("Mul", [i, init(f"{p}.e_mul{j}", np.float32(63.5))], f"{p}.emb_s{j}", new_nodes)
                    v = new_node("Add", [v, init(f"{p}.e_off{j}", np.float32(-64.5))], f"{p}.emb_o{j}", new_nodes)
                parts.append(new_node("Cast", [v], f"{p}.emb_q{j}", new_nodes, to=TensorProto.INT8))
            e_q = new_node("Concat", parts, f"{p}.emb_q", new_nodes, axis=-1)
            e_step = 1 / 127 if emb_mode == "cast8" else 1 / 63.5
            e_zp = 0 if emb_mode == "cast8" else -64
        elif emb_mode == "concat-f32":
            e_q = new_node("QuantizeLinear", [b["emb"], e_scale, z0], f"{p}.emb_q", new_nodes)
        else:
            parts = [new_node("QuantizeLinear", [i, e_scale, z0], f"{p}.emb_q{j}", new_nodes) for j, i in enumerate(concat.input)]
            e_q = new_node("Concat", parts, f"{p}.emb_q", new_nodes, axis=-1)
        sw0 = float(sym_scale(w0))
        unit = e_step * sw0 / s             # one step of the i32 accumulator, in stream units
        acc = new_node("MatMulInteger", [e_q, init(f"{p}.w0_q", q8(w0, sw0))] + ([init(f"{p}.e_zp", np.int8(e_zp))] if e_zp else []),
                       f"{p}.acc0", new_nodes)
        tq = new_node("Div", [toff, init(f"{p}.unit0", np.float32(unit))], f"{p}.t_units", new_nodes)
        tq = new_node("Round", [tq], f"{p}.t_round", new_nodes)
        tq = new_node("Cast", [tq], f"{p}.t_i32", new_nodes, to=TensorProto.INT32)
        acct = new_node("Add", [acc, tq], f"{p}.acc0_t", new_nodes)
        h = new_node("DequantizeLinear", [acct, init(f"{p}.unit0_scale", np.float32(unit)), init(f"{p}.zp32_0", np.int32(0))],
                     f"{p}.h0", new_nodes)
    removed |= {id(b["first_mm"]), id(b["first_add"])}
    zp = init(f"{p}.zp", np.int8(-128))
    w_scales = []
    for k, blk in enumerate(b["blocks"], start=1):
        w = G.inits[blk["gemm"].input[1]].T
        bias = G.inits[blk["gemm"].input[2]]
        sw = float(sym_scale(w))
        w_scales.append(sw)
        q = new_node("Cast", [h], f"{p}.r{k}_q", new_nodes, to=TensorProto.INT8)
        acc = new_node("MatMulInteger", [q, init(f"{p}.w{k}_q", q8(w, sw)), zp], f"{p}.acc{k}", new_nodes)
        accb = new_node("Add", [acc, init(f"{p}.b{k}_i32", np.rint(bias / (s * sw)).astype(np.int32))], f"{p}.accb{k}", new_nodes)
        y = new_node("DequantizeLinear", [accb, init(f"{p}.w{k}_scale", np.float32(sw)), init(f"{p}.zp32_{k}", np.int32(0))],
                     f"{p}.y{k}", new_nodes)
        h = new_node("Add", [h, y], f"{p}.h{k}", new_nodes)
        removed |= {id(blk["relu"]), id(blk["gemm"]), id(blk["add"])}
    fin = b["final"]
    wf = G.inits[fin["gemm"].input[1]].T
    bf = G.inits[fin["gemm"].input[2]]
    wf_sc = sym_scale(wf, axis=0)
    q = new_node("Cast", [h], f"{p}.rf_q", new_nodes, to=TensorProto.INT8)
    acc = new_node("MatMulInteger", [q, init(f"{p}.wf_q", q8(wf, wf_sc)), zp], f"{p}.accf", new_nodes)
    accf = new_node("Cast", [acc], f"{p}.accf_f32", new_nodes, to=TensorProto.FLOAT)
    sc = new_node("Mul", [accf, init(f"{p}.f_scale", (s * wf_sc).astype(np.float32))], f"{p}.f_scaled", new_nodes)
    new_nodes.append(helper.make_node("Add", [sc, init(f"{p}.bf", bf.astype(np.float32))], [fin["gemm"].output[0]], name=f"{p}.out"))
    removed |= {id(fin["relu"]), id(fin["gemm"])}
    report["branches"].append({"s": s, "weight_scale": w_scales, "final_weight_scale": wf_sc.tolist(),
                               "range_in_steps": {h: act_hi[h] / s for h in stream}})
    return removed


def sin_phase_embedding(G, b, p, new_nodes, init) -> str:
    """[sin(a), cos(a)] = sin([a, a + pi/2]): one Sin over the same width and no Concat. (The
    rounding of a + pi/2 in f32 is ~3e-5 at |a| ~ 400.)"""
    concat = G.producer[b["emb"]]
    sin_n, cos_n = (G.producer[i] for i in concat.input)
    assert sin_n.op_type == "Sin" and cos_n.op_type == "Cos" and sin_n.input[0] == cos_n.input[0]
    a_mm = G.producer[sin_n.input[0]]
    assert a_mm.op_type == "MatMul"
    F = G.const(a_mm.input[1])
    F2 = np.concatenate([F, F], axis=1).astype(np.float32)
    phase = np.concatenate([np.zeros(F.shape[1]), np.full(F.shape[1], np.pi / 2)]).astype(np.float32)
    a2 = new_node("MatMul", [a_mm.input[0], init(f"{p}.freq2", F2)], f"{p}.emb_arg", new_nodes)
    a3 = new_node("Add", [a2, init(f"{p}.phase", phase)], f"{p}.emb_arg_phase", new_nodes)
    return new_node("Sin", [a3], f"{p}.emb_sin", new_nodes)


def new_node(op, inputs, name, nodes, **attrs):
    nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
    return name


def toposort(nodes, available):
    avail = set(available)
    done, out = set(), []
    pending = list(nodes)
    while pending:
        rest = []
        for n in pending:
            if all((not i) or i in avail for i in n.input):
                out.append(n)
                avail |= set(n.output)
            else:
                rest.append(n)
        assert len(rest) < len(pending), [n.name for n in rest]
        pending = rest
    return out


# ----------------------------------------------------------------------------- checks

def ort_reference_file(dst: Path) -> onnx.ModelProto:
    """onnxruntime's CPU QuantizeLinear takes float input only; the ONNX spec also allows int32
    (what this file uses). For the onnxruntime check only, the same graph with a Cast to f32 in front
    of each int32 QuantizeLinear (exact: |h| < 2^24 here)."""
    m = onnx.load(str(dst))
    nodes = []
    need_clip = False
    producers = {o: n for n in m.graph.node for o in n.output}
    for n in m.graph.node:
        if n.op_type == "Cast" and re.fullmatch(r"q\d+\.(r(\d+|f)_q|emb_q\d)|c\d+\.x_q", n.name):  # tract's saturating cast
            c = n.input[0] + "_ort_clip"
            nodes.append(helper.make_node("Clip", [n.input[0], "ort_lo", "ort_hi"], [c], name=c))
            n.input[0] = c
            need_clip = True
        if n.op_type == "QuantizeLinear" and re.fullmatch(r"q\d+\.h\d+", n.input[0]):  # the i32 stream
            c = n.input[0] + "_ort_f32"
            nodes.append(helper.make_node("Cast", [n.input[0]], [c], to=TensorProto.FLOAT, name=c))
            n.input[0] = c
        nodes.append(n)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    if need_clip:
        m.graph.initializer.extend([numpy_helper.from_array(np.float32(-128), "ort_lo"), numpy_helper.from_array(np.float32(127), "ort_hi")])
    return m


def tract_cast_saturates() -> bool:
    """The cast form needs tract's float -> int8 Cast to saturate (and truncate towards zero)."""
    import tract
    g = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT8)], "cast",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, [6])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = Path("/tmp") / f"int8-cast-probe-{hashlib.sha256(m.SerializeToString()).hexdigest()[:8]}.onnx"
    onnx.save(m, str(path))
    x = np.array([-300.0, -128.7, -0.9, 0.9, 127.6, 300.0], np.float32)
    got = tract.onnx().load(str(path)).into_model().into_runnable().run([x])[0].to_numpy()
    return got.tolist() == [-128, -128, 0, 0, 127, 127]


def check(src: Path, dst: Path, manifest: dict, seed: int = 1) -> dict:
    import tract
    image = manifest["kind"] == "image"
    feeds = calib_inputs(manifest, 4, 16, seed) if image else calib_inputs(manifest, 8, 2000, seed)
    a = _session(src)
    b = _session(ort_reference_file(dst))
    res = {"ort_max_rel": 0.0, "ort_mean_rel": 0.0, "tract_max_rel": 0.0, "tract_vs_ort_max_abs": 0.0}
    tm = tract.onnx().load(str(dst))
    tm.set_input_fact(0, "16,3,32,32,f32" if image else "2000,2,f32")
    tm.set_input_fact(1, "16,f32" if image else "1,f32")
    tr = tm.into_model().into_runnable()
    num_max = num_mean = den_max = den_mean = 0.0
    for x, t in feeds:
        ref = a.run(None, {"x": x, "t": t})[0]
        got = b.run(None, {"x": x, "t": t})[0]
        gt = tr.run([x, t])[0].to_numpy()
        scale_max = np.abs(ref).max()
        res["ort_max_rel"] = max(res["ort_max_rel"], float(np.abs(got - ref).max() / scale_max))
        res["tract_max_rel"] = max(res["tract_max_rel"], float(np.abs(gt - ref).max() / scale_max))
        res["tract_vs_ort_max_abs"] = max(res["tract_vs_ort_max_abs"], float(np.abs(gt - got).max()))
        num_mean += float(np.abs(gt - ref).mean())
        den_mean += float(np.abs(ref).mean())
    res["tract_mean_rel"] = num_mean / den_mean
    return res


def image_form_block(args) -> dict:
    """The `converted_from` fields that describe an image model's int8 form."""
    block = {
        "form": {"weights": "int8 weights per output channel (symmetric) -> DequantizeLinear -> f32 Conv: constants only, "
                            "folded by tract at load (f32 arithmetic, int8 storage; standard ONNX)",
                 "conv": "Conv input quantized by Mul + Add + Cast to int8 (relies on tract's saturating float->int8 Cast: "
                         "not standard ONNX, for tract only; per-tensor scale and zero point) -> ConvInteger (int8 weights "
                         "per output channel) -> Cast to f32 -> per-channel scale and bias"}[args.image_form]
                + "; norms, SiLU, FiLM, time path, Resize and gate f32",
        "options": {"image_form": args.image_form, "float_convs": args.float_convs,
                    **({"stream_top": args.stream_top} if args.image_form == "conv" else {})},
    }
    if args.image_form == "conv":
        block["calibration"] = {"inputs": "x_t = sqrt(abar_t) x0 + sqrt(1-abar_t) eps, x0 rendered by landscapes.py "
                                          f"(set {args.calib_seed + 100}), t uniform over the schedule per image",
                                "batches": args.calib_batches, "images_per_batch": args.calib_points, "seed": args.calib_seed,
                                "activation_range": f"percentiles {100 - args.percentile:g} / {args.percentile:g} of each Conv input"}
    return block


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("--out", default=None, help="output .onnx (default: SRC-int8.onnx beside SRC)")
    ap.add_argument("--percentile", type=float, default=99.99, help="activation range: this percentile of relu(h) (100 = max)")
    ap.add_argument("--calib-batches", type=int, default=None, help="default 64 (2D), 16 (images)")
    ap.add_argument("--calib-points", type=int, default=None, help="points (2D, default 2000) or images (default 16) per batch")
    ap.add_argument("--image-form", choices=["weights", "conv"], default="weights",
                    help="image models: weights: int8 weights, DequantizeLinear folded by tract (f32 arithmetic); "
                         "conv: ConvInteger with Cast-quantized activations (tract-specific)")
    ap.add_argument("--float-convs", default="", help="image models: comma-separated substrings of Conv node names "
                                                      "that stay f32 (weights and arithmetic), e.g. conv_in/,conv_out/")
    ap.add_argument("--calib-seed", type=int, default=0)
    ap.add_argument("--form", choices=["cast", "i32"], default="cast",
                    help="cast: f32 stream, saturating Cast = ReLU + quantize (tract-specific); i32: int32 stream, QuantizeLinear (standard ONNX)")
    ap.add_argument("--stream-top", type=float, default=200.0, help="cast form: calibrated range maps to this many steps")
    ap.add_argument("--emb", choices=["sin-phase", "concat-i8", "concat-f32", "cast8", "cast7"], default="concat-f32",
                    help="first layer int8: quantize Sin and Cos apart and concatenate int8, or quantize the f32 concatenation")
    ap.add_argument("--first", choices=["f32", "int8"], default="f32", help="first layer of each branch (after the embedding)")
    args = ap.parse_args()
    src = Path(args.src)
    dst = Path(args.out) if args.out else src.with_name(src.stem + "-int8.onnx")
    manifest = json.loads(src.with_suffix(".json").read_text())
    image = manifest["kind"] == "image"
    args.calib_batches = args.calib_batches or (16 if image else 64)
    args.calib_points = args.calib_points or (16 if image else 2000)
    cast = args.image_form == "conv" if image else args.form == "cast"
    if cast and not tract_cast_saturates():
        raise SystemExit("this tract's float -> int8 Cast does not saturate: the cast form would be wrong")
    if image:
        rep = convert_image(src, dst, manifest, args.image_form, args.percentile, args.calib_batches, args.calib_points,
                            args.calib_seed, args.stream_top, tuple(filter(None, args.float_convs.split(","))))
    else:
        rep = convert(src, dst, manifest, args.percentile, args.calib_batches, args.calib_points, args.calib_seed, args.first, args.form, args.stream_top, args.emb)
    err = check(src, dst, manifest)
    print(f"{dst}: eps vs fp32: onnxruntime max {err['ort_max_rel']:.4f}, tract max {err['tract_max_rel']:.4f} "
          f"(mean {err['tract_mean_rel']:.4f}) of the output scale; tract vs onnxruntime max abs {err['tract_vs_ort_max_abs']:.2e}")
    for i, b in enumerate(rep.get("branches", [])):
        if "S" in b:
            print(f"  branch {i}: S={b['S']:.3e} slack per layer {[round(s, 2) for s in b['slack']]}")
        else:
            print(f"  branch {i}: s={b['s']:.3e}, calibrated range in steps {[round(v, 1) for v in b['range_in_steps'].values()]}")
    manifest["name"] = dst.stem
    manifest["file"] = dst.name
    manifest["sha256"] = hashlib.sha256(dst.read_bytes()).hexdigest()
    manifest["precision"] = "int8"
    manifest["converted_from"] = {
        "file": src.name, "sha256": hashlib.sha256(src.read_bytes()).hexdigest(), "by": "models/train/int8.py",
        **(image_form_block(args) if image else {
            "form": ({"cast": "f32 residual stream in activation steps (h/s - 128.5); Cast to int8 = ReLU + quantization "
                               "(relies on tract's saturating float->int8 Cast: not standard ONNX, for tract only); "
                               "MatMulInteger (int8 weights, one scale per tensor) + i32 bias -> DequantizeLinear -> f32 add",
                      "i32": "int32 residual stream; QuantizeLinear(i32 -> i8, zero point -128 = ReLU) -> MatMulInteger "
                             "(int8 weights, one scale per tensor) -> i32 adds"}[args.form]
                     + f"; first layer {args.first}" + (f" (embedding: {args.emb})" if args.first == "int8" else "")
                     + "; last layer per-channel int8, dequantized to f32; embeddings, t path and gate f32"),
            "options": {"form": args.form, "first": args.first, "emb": args.emb, "stream_top": args.stream_top},
            "calibration": {"inputs": f"x_t = sqrt(abar_t) x0 + sqrt(1-abar_t) eps, x0 from models/data/{manifest['dataset']}.npy, "
                                      "t uniform over the schedule, one t per batch",
                            "batches": args.calib_batches, "points_per_batch": args.calib_points, "seed": args.calib_seed,
                            "activation_range": f"percentile {args.percentile} of relu(h)"},
        }),
        "max_relative_difference_onnxruntime": err["ort_max_rel"],
        "max_relative_difference_tract": err["tract_max_rel"],
        "mean_relative_difference_tract": err["tract_mean_rel"],
    }
    dst.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
