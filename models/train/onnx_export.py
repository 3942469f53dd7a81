"""ONNX export of a trained denoiser and its check against PyTorch with onnxruntime.

Writes one self-contained .onnx (opset 17, weights embedded, dynamic batch axis `N`) with
inputs `x` [N,2], `t` [1] (float32: one timestep for the whole call, as every sampler calls the
model) and outputs `eps` [N,2] (+ `gate` [1,2] for dual-scale). Everything that depends on t
alone (the time embedding, the gate, the time part of each branch's first layer) then runs at
batch 1 and broadcasts over the N samples: 23% less time per evaluation at batch 2,000-10,000
with tract (models/report/shared-t.md). It strips `value_info` (intermediate shape annotations
with symbolic dims that tract may refuse to unify with a concrete batch) and fails loudly if the
file does not match PyTorch.
"""
from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import tract
import torch
from torch import nn

import atomic

OPSET = 17
ALLOWED_OPS = {"MatMul", "Gemm", "Add", "Mul", "Relu", "Sin", "Cos", "Concat", "Softmax",
               "Unsqueeze", "Slice", "Transpose", "Constant"}
TOLERANCE = 1e-5
PREFIX = "model."


class SharedTimestep(nn.Module):
    """The export form of a 2D denoiser: the same weights and function, for one timestep t [1]
    per call. A branch's first layer, Linear([x_emb, t_emb]), is split into x_emb @ W_x^T (per
    sample) + (t_emb @ W_t^T + b) (once, broadcast). The two parts are stored transposed, as
    `{branch}.w_x_T` and `{branch}.w_t_T` (fewstep.load_shipped joins them again)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.branches = ["global_branch", "local_branch"] if hasattr(model, "gate") else ["net"]
        for name in self.branches:
            first = getattr(model, name).network[0]
            k = first.in_features - model.t_emb.freq_matrix.shape[1] * 2
            self.register_buffer(f"{name}_w_x_T", first.weight[:, :k].T.contiguous().detach())
            self.register_buffer(f"{name}_w_t_T", first.weight[:, k:].T.contiguous().detach())

    def branch(self, name: str, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        br = getattr(self.model, name)
        w_x, w_t = getattr(self, f"{name}_w_x_T"), getattr(self, f"{name}_w_t_T")
        h = br.x_emb(x) @ w_x + (t_emb @ w_t + br.network[0].bias)
        for layer in list(br.network)[1:]:
            h = layer(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor):
        m = self.model
        t_emb = m.t_emb(t)
        if not hasattr(m, "gate"):
            return self.branch("net", x, t_emb)
        g = self.branch("global_branch", x, t_emb)
        loc = self.branch("local_branch", m.upscale(x), t_emb)
        w = m.gate(t_emb)
        return w[:, 0:1] * g + w[:, 1:2] * loc, w


def output_names(arch: str) -> list[str]:
    return ["eps", "gate"] if arch == "dualscale" else ["eps"]


def export(model: nn.Module, arch: str, path: Path) -> dict:
    """Export `model` (eval mode) to `path` atomically; returns {op: count}."""
    model.eval()
    names = output_names(arch)
    x = torch.zeros(4, 2)
    t = torch.full((1,), 3.0)
    buf = io.BytesIO()
    kwargs = dict(
        input_names=["x", "t"],
        output_names=names,
        dynamic_axes={"x": {0: "N"}, "eps": {0: "N"}},
        opset_version=OPSET,
        do_constant_folding=True,
    )
    try:
        torch.onnx.export(SharedTimestep(model), (x, t), buf, dynamo=False, **kwargs)
    except TypeError:  # torch versions without the `dynamo` switch
        torch.onnx.export(SharedTimestep(model), (x, t), buf, **kwargs)
    proto = onnx.load_from_string(buf.getvalue())
    del proto.graph.value_info[:]
    _strip_prefix(proto)
    proto.producer_name = "dualscale models/train"
    onnx.checker.check_model(proto, full_check=True)
    ops = Counter(node.op_type for node in proto.graph.node)
    extra = set(ops) - ALLOWED_OPS
    if extra:
        raise RuntimeError(f"exported graph uses ops outside the tract-friendly set: {sorted(extra)}")
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer):
        raise RuntimeError("weights were written as external data; the .onnx must be self-contained")
    data = proto.SerializeToString()
    atomic.write_bytes(path, data)
    return dict(sorted(ops.items()))


def _strip_prefix(proto: onnx.ModelProto) -> None:
    """Names the weights as the model's state dict does (`global_branch.network.0.weight`), not
    as the wrapper sees them, so that fewstep.load_shipped can read them back."""
    def bare(name: str) -> str:
        name = name[len(PREFIX):] if name.startswith(PREFIX) else name
        for suffix in ("_w_x_T", "_w_t_T"):
            if name.endswith(suffix):
                return name[: -len(suffix)] + "." + suffix[1:]
        return name

    for init in proto.graph.initializer:
        init.name = bare(init.name)
    for node in proto.graph.node:
        for k, name in enumerate(node.input):
            node.input[k] = bare(name)


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
    names = output_names(arch)
    if [o.name for o in sess.get_outputs()] != names:
        raise RuntimeError(f"{path}: outputs {[o.name for o in sess.get_outputs()]}, expected {names}")
    diffs = {name: 0.0 for name in names}
    for step in range(100):  # one call per timestep, as the runtime makes them
        rows = slice(step * per_t, (step + 1) * per_t)
        got = sess.run(None, {"x": x[rows].numpy(), "t": t[rows][:1].numpy()})
        for name, r, o in zip(names, ref, got):
            want = r[rows].numpy() if name == "eps" else r[rows][:1].numpy()
            if o.shape != want.shape or o.dtype != np.float32:
                raise RuntimeError(f"{path}: output {name} is {o.dtype}{o.shape}, expected float32{want.shape}")
            diffs[name] = max(diffs[name], float(np.max(np.abs(o - want))))
    # a different batch size through the same session checks the dynamic axis
    one = sess.run(None, {"x": x[:1].numpy(), "t": t[:1].numpy()})[0]
    diffs["eps_batch1"] = float(np.max(np.abs(one - ref[0][:1].numpy())))
    rows = slice(37 * per_t, 38 * per_t)
    diffs.update(_tract_diffs(path, x[rows].numpy(), t[rows][:1].numpy(), [r[rows].numpy() for r in ref], names))
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
            model.set_input_fact(1, "1,f32")
        got = model.into_model().into_runnable().run([x, t])
        if len(got) != len(names):
            raise RuntimeError(f"{path}: tract gives {len(got)} outputs, expected {names}")
        for name, g, r in zip(names, got, ref):
            want = r if name == "eps" else r[:1]
            out[f"{name}_tract_{mode}"] = float(np.max(np.abs(g.to_numpy() - want)))
    return out
