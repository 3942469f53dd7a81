"""ONNX export of a trained 32x32 image denoiser and its check against PyTorch.

Writes one self-contained .onnx (opset 17, weights embedded, dynamic batch axis `N`) with inputs
`x` [N,3,32,32], `t` [N] (float32) and outputs named after the prediction type (`v` for
v_prediction, `eps` for epsilon) [N,3,32,32], plus `gate` [N,2] for the dual-scale model.
Strips `value_info` (as `onnx_export` does) and fails loudly if onnxruntime or tract (the Rust
runtime's engine, python binding of the same version) disagree with PyTorch.
"""
from __future__ import annotations

import io
import os
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import tract
from torch import nn

import atomic

OPSET = 17
ALLOWED_OPS = {"Conv", "InstanceNormalization", "Reshape", "Shape", "Sigmoid", "AveragePool", "Resize",
               "MatMul", "Gemm", "Add", "Mul", "Sin", "Cos", "Concat", "Softmax", "Unsqueeze", "Slice",
               "Constant"}
# convolutions sum up to 576 products per output; float32 reassociation across backends stays ~1e-6
TOLERANCE = 1e-4
OUT_NAME = {"v_prediction": "v", "epsilon": "eps"}


def output_names(arch: str, prediction_type: str) -> list[str]:
    first = OUT_NAME[prediction_type]
    return [first, "gate"] if arch == "dualscale" else [first]


def export(model: nn.Module, arch: str, prediction_type: str, path: Path) -> dict:
    """Export `model` (eval mode) to `path` atomically; returns {op: count}."""
    model.eval()
    names = output_names(arch, prediction_type)
    buf = io.BytesIO()
    torch.onnx.export(model, (torch.zeros(2, 3, 32, 32), torch.zeros(2)), buf, dynamo=False,
                      input_names=["x", "t"], output_names=names,
                      dynamic_axes={n: {0: "N"} for n in ["x", "t", *names]},
                      opset_version=OPSET, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    del proto.graph.value_info[:]
    proto.producer_name = "dualscale models/train"
    onnx.checker.check_model(proto, full_check=True)
    ops = Counter(node.op_type for node in proto.graph.node)
    extra = set(ops) - ALLOWED_OPS
    if extra:
        raise RuntimeError(f"exported graph uses ops outside the tract-friendly set: {sorted(extra)}")
    data = proto.SerializeToString()
    atomic.write_bytes(path, data)
    return dict(sorted(ops.items()))


@torch.no_grad()
def verify(model: nn.Module, arch: str, prediction_type: str, path: Path, n: int = 200, seed: int = 0) -> dict:
    """Random x ~ N(0,1) at n timesteps spread over 0..999 through onnxruntime (batch n and 1) and
    tract (symbolic and concrete batch); raises if any output differs by more than TOLERANCE."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 999, n).round()
    x = torch.randn(n, 3, 32, 32, generator=g)
    ref = model(x, t)
    ref = [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]
    names = output_names(arch, prediction_type)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    if [o.name for o in sess.get_outputs()] != names:
        raise RuntimeError(f"{path}: outputs {[o.name for o in sess.get_outputs()]}, expected {names}")
    got = sess.run(None, {"x": x.numpy(), "t": t.numpy()})
    diffs = {}
    for name, r, o in zip(names, ref, got):
        if o.shape != r.shape or o.dtype != np.float32:
            raise RuntimeError(f"{path}: output {name} is {o.dtype}{o.shape}, expected float32{r.shape}")
        diffs[f"{name}_ort"] = float(np.max(np.abs(o - r)))
    one = sess.run(None, {"x": x[:1].numpy(), "t": t[:1].numpy()})[0]
    diffs[f"{names[0]}_ort_batch1"] = float(np.max(np.abs(one - ref[0][:1])))
    for mode in ("symbolic", "concrete"):
        m = tract.onnx().load(str(path))
        if mode == "concrete":
            m.set_input_fact(0, f"{n},3,32,32,f32")
            m.set_input_fact(1, f"{n},f32")
        out = m.into_model().into_runnable().run([x.numpy(), t.numpy()])
        if len(out) != len(names):
            raise RuntimeError(f"{path}: tract gives {len(out)} outputs, expected {names}")
        for name, o, r in zip(names, out, ref):
            diffs[f"{name}_tract_{mode}"] = float(np.max(np.abs(o.to_numpy() - r)))
    bad = {k: v for k, v in diffs.items() if not v <= TOLERANCE}
    if bad:
        raise RuntimeError(f"{path}: differs from PyTorch by {bad} (> {TOLERANCE})")
    return diffs


def time_batch1(path: Path, repeats: int = 300) -> dict:
    """Median ms of one evaluation at batch 1, one thread: onnxruntime and tract (concrete batch),
    wall clock and CPU time of the calling thread (the two differ when other jobs share the core;
    both engines run in the calling thread with one intra-op thread)."""
    import time

    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    t = np.array([500.0], np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    m = tract.onnx().load(str(path))
    m.set_input_fact(0, "1,3,32,32,f32")
    m.set_input_fact(1, "1,f32")
    tm = m.into_model().into_runnable()
    res = {}
    for name, fn in (("onnxruntime_ms", lambda: sess.run(None, {"x": x, "t": t})),
                     ("tract_ms", lambda: tm.run([x, t]))):
        for _ in range(20):
            fn()
        ts, cpu = [], []
        for _ in range(repeats):
            a, c = time.perf_counter(), time.thread_time()
            fn()
            cpu.append(time.thread_time() - c)
            ts.append(time.perf_counter() - a)
        res[name] = float(np.median(ts) * 1000)
        # CPU time of this (single) thread: what the evaluation costs when the core is shared
        res[name.replace("_ms", "_cpu_ms")] = float(np.median(cpu) * 1000)
    res["load_average_1min"] = os.getloadavg()[0]  # the timings mean little on a busy machine
    return res
