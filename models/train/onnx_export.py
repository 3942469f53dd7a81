"""ONNX export of a trained denoiser and its check against PyTorch with onnxruntime.

Writes one self-contained .onnx (opset 17, weights embedded, dynamic batch axis `N`) with
inputs `x` [N,2], `t` [N] (float32) and outputs `eps` [N,2] (+ `gate` [N,2] for dual-scale).
It strips `value_info` (intermediate shape annotations with symbolic dims that tract may refuse
to unify with a concrete batch) and fails loudly if the file does not match PyTorch.
"""
from __future__ import annotations

import io
import os
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import tract
import torch
from torch import nn

OPSET = 17
ALLOWED_OPS = {"MatMul", "Gemm", "Add", "Mul", "Relu", "Sin", "Cos", "Concat", "Softmax",
               "Unsqueeze", "Slice", "Constant"}
TOLERANCE = 1e-5


def output_names(arch: str) -> list[str]:
    return ["eps", "gate"] if arch == "dualscale" else ["eps"]


def export(model: nn.Module, arch: str, path: Path) -> dict:
    """Export `model` (eval mode) to `path` atomically; returns {op: count}."""
    model.eval()
    names = output_names(arch)
    x = torch.zeros(4, 2)
    t = torch.arange(4, dtype=torch.float32)
    buf = io.BytesIO()
    kwargs = dict(
        input_names=["x", "t"],
        output_names=names,
        dynamic_axes={n: {0: "N"} for n in ["x", "t", *names]},
        opset_version=OPSET,
        do_constant_folding=True,
    )
    try:
        torch.onnx.export(model, (x, t), buf, dynamo=False, **kwargs)
    except TypeError:  # torch versions without the `dynamo` switch
        torch.onnx.export(model, (x, t), buf, **kwargs)
    proto = onnx.load_from_string(buf.getvalue())
    del proto.graph.value_info[:]
    proto.producer_name = "dualscale models/train"
    onnx.checker.check_model(proto, full_check=True)
    ops = Counter(node.op_type for node in proto.graph.node)
    extra = set(ops) - ALLOWED_OPS
    if extra:
        raise RuntimeError(f"exported graph uses ops outside the tract-friendly set: {sorted(extra)}")
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer):
        raise RuntimeError("weights were written as external data; the .onnx must be self-contained")
    data = proto.SerializeToString()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return dict(sorted(ops.items()))


@torch.no_grad()
def verify(model: nn.Module, arch: str, path: Path, per_t: int = 100, seed: int = 0) -> dict:
    """Run the file with onnxruntime on random x (N(0, 2.5^2)) at every t = 0..99 and compare.

    Also runs it with tract (the runtime the Rust side uses; python binding of the same
    version), with a symbolic and with a concrete batch. Raises if any output differs from
    PyTorch by more than TOLERANCE; returns the max diffs.
    """
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(100, dtype=torch.float32).repeat_interleave(per_t)
    x = torch.randn(len(t), 2, generator=g) * 2.5
    ref = model(x, t)
    ref = ref if isinstance(ref, tuple) else (ref,)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x.numpy(), "t": t.numpy()})
    names = output_names(arch)
    if [o.name for o in sess.get_outputs()] != names:
        raise RuntimeError(f"{path}: outputs {[o.name for o in sess.get_outputs()]}, expected {names}")
    diffs = {}
    for name, r, o in zip(names, ref, got):
        if o.shape != tuple(r.shape) or o.dtype != np.float32:
            raise RuntimeError(f"{path}: output {name} is {o.dtype}{o.shape}, expected float32{tuple(r.shape)}")
        diffs[name] = float(np.max(np.abs(o - r.numpy())))
    # a different batch size through the same session checks the dynamic axis
    one = sess.run(None, {"x": x[:1].numpy(), "t": t[:1].numpy()})[0]
    diffs["eps_batch1"] = float(np.max(np.abs(one - ref[0][:1].numpy())))
    diffs.update(_tract_diffs(path, x.numpy(), t.numpy(), [r.numpy() for r in ref], names))
    bad = {k: v for k, v in diffs.items() if not v <= TOLERANCE}
    if bad:
        raise RuntimeError(f"{path}: onnxruntime differs from PyTorch by {bad} (> {TOLERANCE})")
    return diffs


def _tract_diffs(path: Path, x: np.ndarray, t: np.ndarray, ref: list[np.ndarray], names: list[str]) -> dict:
    out = {}
    for mode in ("symbolic", "concrete"):
        model = tract.onnx().load(str(path))
        if mode == "concrete":
            model.set_input_fact(0, f"{len(x)},2,f32")
            model.set_input_fact(1, f"{len(t)},f32")
        got = model.into_model().into_runnable().run([x, t])
        if len(got) != len(names):
            raise RuntimeError(f"{path}: tract gives {len(got)} outputs, expected {names}")
        for name, g, r in zip(names, got, ref):
            out[f"{name}_tract_{mode}"] = float(np.max(np.abs(g.to_numpy() - r)))
    return out
