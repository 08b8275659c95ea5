"""`streamd calibrate quantize`: the canonical model -> a Q/DQ INT8 ONNX for TensorRT.

TensorRT 11 has no INT8 builder flag or calibrator any more: INT8 comes from explicit
QuantizeLinear/DequantizeLinear pairs in the ONNX, built as a strongly typed network.
ONNX Runtime's `quantize_static` writes them, with the settings TensorRT wants:
QDQ format, symmetric int8 activations, symmetric per-channel int8 weights. Per-channel
Q/DQ needs opset 13, so the model is converted first. streamd's own graph parts (the
uint8 input front and the box decode: nodes named `streamd_*`) stay in float: they are
cheap, and the decode's exponentials and grid offsets lose the most in int8.

The same Q/DQ model runs in ONNX Runtime on a CPU (slower than FP32 there, so the CPU
path stays FP32), which is how `calibrate report` checks its accuracy anywhere.

Small faces are where INT8 loses first (measured in docs/gpu.md, "INT8"): calibration can
take several frame folders (camera frames plus `calibrate crowd` mosaics), another
calibration method, and by default keeps the most sensitive layers in float: the first
convolution (it sees raw pixels) and the detection heads' last convolutions (their
outputs become boxes and scores).
"""

from __future__ import annotations

import inspect
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from streamd.base.errors import InputError
from streamd.calibration.histograms import histogram_ranges
from streamd.calibration.manifest import FrameEntry, load_manifest, split
from streamd.frames.letterbox import letterbox, load_image
from streamd.model.canonical import INPUT_NAME, ModelError, read_canonical_info

log = logging.getLogger(__name__)

QDQ_OPSET = 13


def letterboxed_frames(directory: Path, frames: list[FrameEntry], width: int, height: int) -> Iterator[np.ndarray]:
    for entry in frames:
        image, _ = letterbox(load_image(str(directory / entry.file)), width, height)
        yield image


METHODS = ("minmax", "percentile", "entropy")


def sensitive_convolutions(graph: onnx.GraphProto) -> list[str]:
    """The convolutions with no convolution before them or none after them: the first
    layer and the detection heads' outputs, found by structure so any export works."""
    producer = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def reaches_conv(start: onnx.NodeProto, step: Callable[[onnx.NodeProto], list[onnx.NodeProto]]) -> bool:
        seen: set[str] = set()
        stack = step(start)
        while stack:
            node = stack.pop()
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type == "Conv":
                return True
            stack.extend(step(node))
        return False

    def upstream(node: onnx.NodeProto) -> list[onnx.NodeProto]:
        return [producer[name] for name in node.input if name in producer]

    def downstream(node: onnx.NodeProto) -> list[onnx.NodeProto]:
        return [after for name in node.output for after in consumers.get(name, [])]

    return [
        node.name
        for node in graph.node
        if node.op_type == "Conv" and (not reaches_conv(node, upstream) or not reaches_conv(node, downstream))
    ]


def quantize(
    model: Path,
    frames_dirs: list[Path],
    output: Path,
    method: str = "minmax",
    keep_sensitive_float: bool = True,
) -> int:
    """Write the INT8 Q/DQ model; returns how many frames calibrated it."""
    from onnx import version_converter
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise InputError(f"calibration method must be one of {', '.join(METHODS)}, not {method!r}")
    info = read_canonical_info(model)
    sources = [(directory, split(load_manifest(directory), "calibration")) for directory in frames_dirs]
    for directory, frames in sources:
        if not frames:
            raise InputError(f"{directory}: no calibration frames in the manifest")

    def images() -> Iterator[np.ndarray]:
        for directory, frames in sources:
            yield from letterboxed_frames(directory, frames, info.input_width, info.input_height)

    total = sum(len(frames) for _, frames in sources)
    source = onnx.load(str(model))
    float_nodes = [node.name for node in source.graph.node if node.name.startswith("streamd_")]
    if keep_sensitive_float:
        float_nodes += sensitive_convolutions(source.graph)
    with tempfile.TemporaryDirectory(prefix="streamd-quant-") as scratch:
        converted = Path(scratch) / "opset13.onnx"
        prepared = Path(scratch) / "prepared.onnx"
        try:
            onnx.save(version_converter.convert_version(source, QDQ_OPSET), str(converted))
        except Exception as error:
            raise ModelError(f"{model}: cannot convert to opset {QDQ_OPSET} for per-channel Q/DQ: {error}") from error
        quant_pre_process(str(converted), str(prepared), skip_symbolic_shape=True)
        if method == "minmax":
            pending = images()

            class Reader(CalibrationDataReader):  # type: ignore[misc]
                def get_next(self) -> dict[str, np.ndarray] | None:
                    image = next(pending, None)
                    return None if image is None else {INPUT_NAME: image[np.newaxis]}

            calibration: dict[str, Any] = {
                "calibration_data_reader": Reader(),
                "calibrate_method": CalibrationMethod.MinMax,
            }
        else:
            if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
                raise InputError(
                    f"calibration method {method} needs onnxruntime 1.24 or later (calibration_cache_path)"
                )
            cache, calibrate_method = histogram_ranges(prepared, images, method, Path(scratch))
            calibration = {"calibration_cache_path": str(cache), "calibrate_method": calibrate_method}
        quantize_static(
            str(prepared),
            str(output),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=float_nodes,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
            **calibration,
        )
    quantized = onnx.load(str(output))
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(source.metadata_props)
    quantized.metadata_props.append(onnx.StringStringEntryProto(key="streamd.precision", value="int8-qdq"))
    onnx.save(quantized, str(output))
    log.info("INT8 Q/DQ model %s from %d calibration frames (%s)", output, total, method)
    return total
