"""The reference decode and letterbox of the YOLOv5-Face model, written from upstream's own code, and box overlap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ANCHORS = {
    8: [(4, 5), (8, 10), (13, 16)],
    16: [(23, 29), (43, 55), (73, 105)],
    32: [(146, 217), (231, 300), (335, 433)],
}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-x)))


def reference_letterbox(path: Path, size: int = 640) -> tuple[np.ndarray, float, float, float]:
    """Upstream's letterbox, written plainly: returns NCHW float input, ratio, pad x, pad y."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    ratio = min(size / frame.height, size / frame.width)
    new_w, new_h = round(frame.width * ratio), round(frame.height * ratio)
    resized = frame.reformat(width=new_w, height=new_h, format="rgb24").to_ndarray()
    pad_x, pad_y = (size - new_w) / 2, (size - new_h) / 2
    top, left = round(pad_y - 0.1), round(pad_x - 0.1)
    canvas = np.full((size, size, 3), 114, dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas.transpose(2, 0, 1)[None].astype(np.float32) / 255, ratio, left, top


def reference_decode(heads: list[np.ndarray], size: int = 640) -> np.ndarray:
    """Upstream yolov5-face's Detect decode of raw heads -> [N, 16] (xywh, obj, 10 lm, cls)."""
    rows = []
    for raw in heads:
        _, na, ny, nx, _ = raw.shape
        stride = size // ny
        yv, xv = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        grid = np.stack((xv, yv), 2).reshape(1, 1, ny, nx, 2)
        anchor = np.array(ANCHORS[stride], dtype=np.float32).reshape(1, na, 1, 1, 2)
        y = np.zeros_like(raw)
        cls_range = [0, 1, 2, 3, 4, 15]
        y[..., cls_range] = sigmoid(raw[..., cls_range])
        y[..., 5:15] = raw[..., 5:15]
        y[..., 0:2] = (y[..., 0:2] * 2 - 0.5 + grid) * stride
        y[..., 2:4] = (y[..., 2:4] * 2) ** 2 * anchor
        for k in range(5):
            y[..., 5 + 2 * k : 7 + 2 * k] = y[..., 5 + 2 * k : 7 + 2 * k] * anchor + grid * stride
        rows.append(y.reshape(-1, 16))
    return np.concatenate(rows)


def reference_faces(rows16: np.ndarray, ratio: float, left: float, top: float, thr: float = 0.3) -> np.ndarray:
    """Score filter, plain greedy NMS at 0.5, back to source pixels -> [K, 5] (x1, y1, x2, y2, score)."""
    scores = rows16[:, 4] * rows16[:, 15]
    rows16, scores = rows16[scores >= thr], scores[scores >= thr]
    boxes = np.stack(
        [
            rows16[:, 0] - rows16[:, 2] / 2,
            rows16[:, 1] - rows16[:, 3] / 2,
            rows16[:, 0] + rows16[:, 2] / 2,
            rows16[:, 1] + rows16[:, 3] / 2,
        ],
        axis=1,
    )
    keep: list[int] = []
    for i in np.argsort(-scores):
        if all(box_iou(boxes[i], boxes[j]) <= 0.5 for j in keep):
            keep.append(int(i))
    out = boxes[keep].copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - left) / ratio
    out[:, [1, 3]] = (out[:, [1, 3]] - top) / ratio
    return np.concatenate([out, scores[keep, None]], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def export_layout_model(raw_model: Path, destination: Path) -> Path:
    """The raw model with upstream export.py's decode appended: one output [1, 25200, 16]."""
    model = onnx.load(str(raw_model))
    graph = model.graph
    counter = iter(range(10_000))

    def const(value: np.ndarray | np.generic) -> str:
        name = f"ref_c{next(counter)}"
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        name = f"ref_n{next(counter)}"
        graph.node.append(helper.make_node(op, inputs, [name], **attrs))
        return name

    def part(tensor: str, start: int, end: int) -> str:
        def idx(value: int) -> str:
            return const(np.array([value], dtype=np.int64))

        return node("Slice", [tensor, idx(start), idx(end), idx(4)])

    heads = []
    for output in graph.output:
        ny = output.type.tensor_type.shape.dim[2].dim_value
        nx = output.type.tensor_type.shape.dim[3].dim_value
        stride = 640 // ny
        yv, xv = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        grid = np.stack((xv, yv), 2).reshape(1, 1, ny, nx, 2).astype(np.float32)
        anchor = np.array(ANCHORS[stride], dtype=np.float32).reshape(1, 3, 1, 1, 2)
        sig = node("Sigmoid", [output.name])
        xy = node(
            "Mul",
            [
                node("Add", [node("Mul", [part(sig, 0, 2), const(np.float32(2))]), const(grid - 0.5)]),
                const(np.float32(stride)),
            ],
        )
        wh2 = node("Mul", [part(sig, 2, 4), const(np.float32(2))])
        wh = node("Mul", [node("Mul", [wh2, wh2]), const(anchor)])
        lm = node(
            "Add",
            [node("Mul", [part(output.name, 5, 15), const(np.tile(anchor, 5))]), const(np.tile(grid * stride, 5))],
        )
        y = node("Concat", [xy, wh, part(sig, 4, 5), lm, part(sig, 15, 16)], axis=4)
        heads.append(node("Reshape", [y, const(np.array([1, -1, 16], dtype=np.int64))]))
    graph.node.append(helper.make_node("Concat", heads, ["output"], axis=1))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 25200, 16]))
    onnx.save(model, str(destination))
    return destination
