"""fp16 variants of the shipped fp32 ONNX models, for boards with native f16 arithmetic.

    python models/train/fp16.py models/dino-dualscale.onnx    # writes models/dino-dualscale-fp16.onnx

What is converted, and what is not:
- The sinusoidal embeddings stay in fp32: their arguments reach |x| ~ 400 (X_SCALE = 25 times the
  local branch's upscaled coordinates times the first frequency), where fp16 resolves steps of
  0.25, so sin/cos of them would be noise. Sin, Cos and every node they depend on (the frequency
  MatMuls, the inputs) keep fp32; their outputs are cast to fp16 where the fp16 part reads them.
- Everything else (the two MLP branches, the gate) computes in fp16 with fp16 weights: ~99% of
  the parameters.
- Inputs and outputs stay fp32 (x, t in; eps, gate out), so the runtime feeds and reads the model
  as it does the fp32 one.
- Gemm(A, B, C) becomes MatMul(A, B') + C: tract 0.23.9 mis-types an fp16 Gemm with a bias.

The result is checked against the fp32 model with onnxruntime (fp16 rounding: the limit is
relative, 1e-2 of the output's scale) and written with a manifest copied from the fp32 one (new
file name, sha256, `precision: fp16`).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FP32_OPS = {"Sin", "Cos"}
# Inputs that ONNX requires in fp32 whatever the data type (Resize's roi and scales).
FP32_INPUTS = {"Resize": {1, 2}}


def _gemm_to_matmul(graph: onnx.GraphProto, inits: dict[str, onnx.TensorProto]) -> None:
    nodes = []
    for node in graph.node:
        if node.op_type != "Gemm":
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0, node.name
        assert attrs.get("transA", 0) == 0, node.name
        a, b = node.input[0], node.input[1]
        if attrs.get("transB", 0):
            w = numpy_helper.to_array(inits[b]).T.copy()
            b = b + "_T"
            inits[b] = numpy_helper.from_array(w, b)
        mm_out = node.output[0] + ("_mm" if len(node.input) > 2 else "")
        nodes.append(helper.make_node("MatMul", [a, b], [mm_out], name=node.name + "/MatMul"))
        if len(node.input) > 2:
            nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=node.name + "/Add"))
    del graph.node[:]
    graph.node.extend(nodes)


def convert(src: Path, dst: Path) -> None:
    model = onnx.load(str(src))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    _gemm_to_matmul(graph, inits)

    producer = {out: n for n in graph.node for out in n.output}
    # fp32 region: Sin/Cos and all their ancestors.
    fp32_nodes: set[int] = set()
    stack = [n for n in graph.node if n.op_type in FP32_OPS]
    while stack:
        n = stack.pop()
        if id(n) in fp32_nodes:
            continue
        fp32_nodes.add(id(n))
        stack.extend(producer[i] for i in n.input if i in producer)

    graph_inputs = {i.name for i in graph.input}
    keep_fp32 = {i for n in graph.node for k, i in enumerate(n.input) if k in FP32_INPUTS.get(n.op_type, ())}
    fp32_tensors = {o for n in graph.node if id(n) in fp32_nodes for o in n.output} | graph_inputs
    casts: dict[str, str] = {}
    new_nodes = []
    new_inits: dict[str, onnx.TensorProto] = {}

    def fp16_init(name: str) -> str:
        t = inits[name]
        if t.data_type != TensorProto.FLOAT:
            new_inits.setdefault(name, t)
            return name
        half = name + "_fp16"
        if half not in new_inits:
            new_inits[half] = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), half)
        return half

    for n in graph.node:
        if id(n) in fp32_nodes:
            for i in n.input:
                if i in inits:
                    new_inits.setdefault(i, inits[i])
            new_nodes.append(n)
            continue
        for k, i in enumerate(n.input):
            if k in FP32_INPUTS.get(n.op_type, ()) or not i:
                if i in inits:
                    new_inits.setdefault(i, inits[i])
                continue
            if i in inits:
                n.input[k] = fp16_init(i)
            elif i in fp32_tensors:
                if i not in casts:
                    casts[i] = i + "_fp16"
                    new_nodes.append(helper.make_node("Cast", [i], [casts[i]], to=TensorProto.FLOAT16, name=i + "/to_fp16"))
                n.input[k] = casts[i]
        if n.op_type == "Constant" and not set(n.output) & keep_fp32:
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.FLOAT16
        new_nodes.append(n)

    # Outputs stay fp32: the fp16 producer writes NAME_fp16, a Cast writes NAME.
    for out in graph.output:
        if out.name in fp32_tensors:
            continue
        half = out.name + "_fp16"
        for n in new_nodes:
            for k, o in enumerate(n.output):
                if o == out.name:
                    n.output[k] = half
            for k, i in enumerate(n.input):
                if i == out.name:
                    n.input[k] = half
        new_nodes.append(helper.make_node("Cast", [half], [out.name], to=TensorProto.FLOAT, name=out.name + "/to_fp32"))

    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(new_inits.values())
    del graph.value_info[:]
    onnx.checker.check_model(model)
    # A type check only: the inferred value infos (symbolic batch N) are not saved, since tract
    # then refuses a concrete batch unless told to ignore them.
    onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.save(model, str(dst))


def check(src: Path, dst: Path, t_count: int) -> float:
    """Largest difference between the fp32 and fp16 models, relative to the output's scale, on
    random samples (the model's own sample shape, 512 points or 8 images) across the timesteps."""
    import onnxruntime as ort

    a = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    x_in, t_in = a.get_inputs()[0], a.get_inputs()[1]
    tail = [int(d) for d in x_in.shape[1:]]
    n = 512 if len(tail) == 1 else 8
    rng = np.random.default_rng(0)
    worst = 0.0
    for frac in (0.0, 0.1, 0.5, 1.0):
        t = round(frac * (t_count - 1))
        x = rng.standard_normal([n] + tail).astype(np.float32)
        t_rows = 1 if t_in.shape[0] == 1 else n  # one timestep per call, or one per sample
        feed = {x_in.name: x, t_in.name: np.full((t_rows,), t, np.float32)}
        for ra, rb in zip(a.run(None, feed), b.run(None, feed)):
            worst = max(worst, float(np.abs(ra - rb).max() / max(np.abs(ra).max(), 1e-6)))
    return worst


def main(src: str) -> None:
    src_p = Path(src)
    dst = src_p.with_name(src_p.stem + "-fp16.onnx")
    convert(src_p, dst)
    manifest = json.loads(src_p.with_suffix(".json").read_text())
    rel = check(src_p, dst, manifest["scheduler"]["num_train_timesteps"])
    print(f"{dst}: max difference {rel:.2e} of the output scale")
    assert rel < 1e-2, rel
    manifest["name"] = manifest["name"] + "-fp16"
    manifest["file"] = dst.name
    manifest["sha256"] = hashlib.sha256(dst.read_bytes()).hexdigest()
    manifest["precision"] = "fp16"
    manifest["converted_from"] = {"file": src_p.name, "sha256": hashlib.sha256(src_p.read_bytes()).hexdigest(),
                                  "by": "models/train/fp16.py", "max_relative_difference": rel}
    dst.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
