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
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from streamd.calibration.manifest import FrameEntry, load_manifest, split
from streamd.model.canonical import INPUT_NAME, ModelError, read_canonical_info
from streamd.preprocess import letterbox, load_image

log = logging.getLogger(__name__)

QDQ_OPSET = 13


def letterboxed_frames(directory: Path, frames: list[FrameEntry], width: int, height: int) -> Iterator[np.ndarray]:
    for entry in frames:
        image, _ = letterbox(load_image(str(directory / entry.file)), width, height)
        yield image


def quantize(model: Path, frames_dir: Path, output: Path) -> int:
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

    info = read_canonical_info(model)
    calibration = split(load_manifest(frames_dir), "calibration")
    if not calibration:
        raise ValueError(f"{frames_dir}: no calibration frames in the manifest")
    images = letterboxed_frames(frames_dir, calibration, info.input_width, info.input_height)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(images, None)
            return None if image is None else {INPUT_NAME: image[np.newaxis]}

    source = onnx.load(str(model))
    float_nodes = [node.name for node in source.graph.node if node.name.startswith("streamd_")]
    with tempfile.TemporaryDirectory(prefix="streamd-quant-") as scratch:
        converted = Path(scratch) / "opset13.onnx"
        prepared = Path(scratch) / "prepared.onnx"
        try:
            onnx.save(version_converter.convert_version(source, QDQ_OPSET), str(converted))
        except Exception as error:
            raise ModelError(f"{model}: cannot convert to opset {QDQ_OPSET} for per-channel Q/DQ: {error}") from error
        quant_pre_process(str(converted), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(output),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=float_nodes,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
    quantized = onnx.load(str(output))
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(source.metadata_props)
    quantized.metadata_props.append(onnx.StringStringEntryProto(key="streamd.precision", value="int8-qdq"))
    onnx.save(quantized, str(output))
    log.info("INT8 Q/DQ model %s from %d calibration frames", output, len(calibration))
    return len(calibration)
