"""`streamd model prepare`: YOLOv5-Face ONNX in either layout -> the canonical model.

Layouts accepted (see `canonical.py` for the output contract):

- `raw-heads`: three outputs [B, 3, H/s, W/s, 16] for strides 8, 16, 32, before sigmoid
  and grid decode, often with batch 1 baked into Reshape shape constants (as upstream's
  `torch2tensorrt` export). The decode is appended to the graph, as upstream does it:
  sigmoid on box, objectness and class; xy = (2s - 0.5 + grid) * stride;
  wh = (2s)^2 * anchor; landmark = raw * anchor + grid * stride.
- `decoded`: upstream `export.py`, one output [B, N, 16] already decoded
  (x, y, w, h, objectness, ten landmark coordinates, face class).

Either way the batch becomes dynamic and a uint8 NHWC input is put in front. Before
writing, the result is run on a batch of two and compared with the same images one at
a time, so a Reshape that still mixes the batch is caught here, not in production.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from streamd.model.canonical import FORMAT_VERSION, INPUT_NAME, OUTPUT_NAME, ROW_WIDTH, ModelError

# YOLOv5-Face default anchors in input pixels, per stride.
DEFAULT_ANCHORS: dict[int, tuple[tuple[int, int], ...]] = {
    8: ((4, 5), (8, 10), (13, 16)),
    16: ((23, 29), (43, 55), (73, 105)),
    32: ((146, 217), (231, 300), (335, 433)),
}
_CHANNELS = 16  # 4 box + 1 objectness + 10 landmarks + 1 class


@dataclass(frozen=True)
class PreparedModel:
    path: Path
    source_layout: str
    input_height: int
    input_width: int
    candidates: int


class _Graph:
    """Adds nodes and constants to a graph under unique names."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"streamd_{hint}_{self._count}"

    def const(self, value: np.ndarray, hint: str = "const") -> str:
        name = self.name(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs: Any) -> str:
        output = self.name(hint or op_type.lower())
        self.graph.node.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def index(self, value: int) -> str:
        return self.const(np.array([value], dtype=np.int64), "idx")

    def slice_last(self, tensor: str, start: int, end: int, axis: int) -> str:
        return self.op("Slice", [tensor, self.index(start), self.index(end), self.index(axis)], "slice")


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def _detect_layout(model: onnx.ModelProto) -> str:
    outputs = [_dims(o) for o in model.graph.output]
    if len(outputs) == 3 and all(len(d) == 5 and d[1] == 3 and d[4] == _CHANNELS for d in outputs):
        return "raw-heads"
    if len(outputs) == 1 and len(outputs[0]) == 3 and outputs[0][2] == _CHANNELS:
        return "decoded"
    shapes = ", ".join(f"{o.name} {_dims(o)}" for o in model.graph.output)
    raise ModelError(
        "outputs do not match a YOLOv5-Face layout: expected three raw heads [B, 3, H/s, W/s, 16] "
        f"or one decoded output [B, N, 16], found {shapes}"
    )


def _check_input(model: onnx.ModelProto) -> tuple[str, int, int]:
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelError(f"expected one image input, found {len(inputs)}: {[i.name for i in inputs]}")
    dims = _dims(inputs[0])
    elem = inputs[0].type.tensor_type.elem_type
    if len(dims) != 4 or dims[1] != 3 or not isinstance(dims[2], int) or not isinstance(dims[3], int) or not dims[2]:
        raise ModelError(f"input '{inputs[0].name}' must be [B, 3, H, W] with fixed H and W, found {dims}")
    if elem != TensorProto.FLOAT:
        raise ModelError(f"input '{inputs[0].name}' must be float32, found {TensorProto.DataType.Name(elem)}")
    return inputs[0].name, int(dims[2]), int(dims[3])


def _free_batch_in_reshapes(model: onnx.ModelProto) -> int:
    """Reshape shapes that pin the batch to 1 get 0 there ("copy the input's dimension")."""
    graph = model.graph
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    initializers = {i.name: i for i in graph.initializer}
    fixed = 0
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        source = node.input[1]
        if source in initializers:
            shape = numpy_helper.to_array(initializers[source])
        elif source in constants:
            shape = numpy_helper.to_array(constants[source].attribute[0].t)
        else:
            continue  # computed from Shape(): follows the batch already
        if shape.ndim == 1 and len(shape) >= 2 and shape[0] == 1:
            new_shape = shape.copy()
            new_shape[0] = 0
            name = f"{source}_streamd_batch"
            graph.initializer.append(numpy_helper.from_array(new_shape.astype(np.int64), name))
            node.input[1] = name
            fixed += 1
    return fixed


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Remove constants nothing reads any more (the Reshape shapes replaced above)."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    nodes = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _scalar(value: float) -> np.ndarray:
    return np.array(value, dtype=np.float32)


def _grid(ny: int, nx: int) -> np.ndarray:
    yv, xv = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    return np.stack((xv, yv), axis=-1).reshape(1, 1, ny, nx, 2).astype(np.float32)


def _decode_head(g: _Graph, raw: str, ny: int, nx: int, stride: int, anchors: tuple[tuple[int, int], ...]) -> str:
    grid = _grid(ny, nx)
    anchor = np.array(anchors, dtype=np.float32).reshape(1, 3, 1, 1, 2)
    sig = g.op("Sigmoid", [raw])
    xy = g.op("Mul", [g.slice_last(sig, 0, 2, 4), g.const(_scalar(2.0))])
    xy = g.op("Mul", [g.op("Add", [xy, g.const(grid - 0.5, "grid")]), g.const(_scalar(stride))])
    wh = g.op("Mul", [g.slice_last(sig, 2, 4, 4), g.const(_scalar(2.0))])
    wh = g.op("Mul", [g.op("Mul", [wh, wh]), g.const(anchor, "anchor")])
    score = g.op("Mul", [g.slice_last(sig, 4, 5, 4), g.slice_last(sig, 15, 16, 4)])
    landmarks = g.op("Mul", [g.slice_last(raw, 5, 15, 4), g.const(np.tile(anchor, 5), "anchor5")])
    landmarks = g.op("Add", [landmarks, g.const(np.tile(grid * stride, 5), "grid5")])
    rows = g.op("Concat", [xy, wh, score, landmarks], axis=4)
    return g.op("Reshape", [rows, g.const(np.array([0, -1, ROW_WIDTH], dtype=np.int64), "shape")])


def _decode_raw_heads(g: _Graph, model: onnx.ModelProto, height: int, width: int) -> str:
    heads = []
    for output in model.graph.output:
        _, _, ny, nx, _ = _dims(output)
        if not isinstance(ny, int) or not isinstance(nx, int) or not ny:
            raise ModelError(f"output '{output.name}' needs a fixed grid size, found {_dims(output)}")
        stride = height // ny
        if stride not in DEFAULT_ANCHORS or width // nx != stride:
            raise ModelError(f"output '{output.name}' grid {ny}x{nx} gives stride {stride}; expected 8, 16 or 32")
        heads.append((stride, output.name, ny, nx))
    if sorted(h[0] for h in heads) != [8, 16, 32]:
        raise ModelError(f"expected heads for strides 8, 16 and 32, found {sorted(h[0] for h in heads)}")
    decoded = [_decode_head(g, name, ny, nx, stride, DEFAULT_ANCHORS[stride]) for stride, name, ny, nx in heads]
    return g.op("Concat", decoded, axis=1)


def _reorder_decoded(g: _Graph, model: onnx.ModelProto) -> str:
    out = model.graph.output[0].name
    score = g.op("Mul", [g.slice_last(out, 4, 5, 2), g.slice_last(out, 15, 16, 2)])
    return g.op("Concat", [g.slice_last(out, 0, 4, 2), score, g.slice_last(out, 5, 15, 2)], axis=2)


def _uint8_nhwc_front(g: _Graph, model: onnx.ModelProto, old_input: str, height: int, width: int) -> None:
    graph = model.graph
    original = len(graph.node)
    scaled = g.op("Mul", [g.op("Cast", [INPUT_NAME], to=TensorProto.FLOAT), g.const(_scalar(1 / 255))])
    nchw = g.op("Transpose", [scaled], perm=[0, 3, 1, 2])
    for node in graph.node[:original]:
        for i, name in enumerate(node.input):
            if name == old_input:
                node.input[i] = nchw
    # ONNX wants nodes in topological order: the new front goes first.
    nodes = [*graph.node[original:], *graph.node[:original]]
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [i for i in graph.input if i.name != old_input]
    del graph.input[:]
    graph.input.extend(
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", height, width, 3]), *kept]
    )


def prepare_model(source: str | Path, destination: str | Path) -> PreparedModel:
    """Convert `source` to the canonical model at `destination`; ModelError says what does not fit."""
    source, destination = Path(source), Path(destination)
    try:
        model = onnx.load(str(source))
    except FileNotFoundError:
        raise ModelError(f"{source}: no such file") from None
    except Exception as exc:
        raise ModelError(f"{source}: not a readable ONNX model ({exc})") from exc
    layout = _detect_layout(model)
    old_input, height, width = _check_input(model)
    _free_batch_in_reshapes(model)
    del model.graph.value_info[:]  # shapes inferred with batch 1 would now be wrong

    g = _Graph(model.graph)
    result = _decode_raw_heads(g, model, height, width) if layout == "raw-heads" else _reorder_decoded(g, model)
    _uint8_nhwc_front(g, model, old_input, height, width)
    planes = g.op("Transpose", [result], perm=[0, 2, 1])  # [batch, N, 15] -> [batch, 15, N]
    identity = helper.make_node("Identity", [planes], [OUTPUT_NAME], name="streamd_output")
    model.graph.node.append(identity)
    del model.graph.output[:]
    model.graph.output.append(
        helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", ROW_WIDTH, "candidates"])
    )
    del model.metadata_props[:]
    for key, value in {
        "streamd.canonical": FORMAT_VERSION,
        "streamd.input_size": f"{height},{width}",
        "streamd.source_layout": layout,
        "streamd.source": source.name,
    }.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    _drop_unused(model.graph)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"{source}: the converted graph is invalid: {exc}") from exc
    candidates = _verify_batching(model, height, width)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_suffix(".partial")
    onnx.save(model, str(partial))
    partial.replace(destination)
    return PreparedModel(destination, layout, height, width, candidates)


def _verify_batching(model: onnx.ModelProto, height: int, width: int) -> int:
    """Batch of two must equal the two images alone; returns the candidate count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    try:
        together = session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
        alone = np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: images[i : i + 1]})[0] for i in range(2)])
    except Exception as exc:
        raise ModelError(f"the converted model does not run with a batch of 2: {exc}") from exc
    if together.shape != alone.shape or not np.allclose(together, alone, rtol=1e-3, atol=1e-2):
        raise ModelError("the converted model mixes images within a batch (a Reshape or similar still assumes batch 1)")
    return int(together.shape[2])
