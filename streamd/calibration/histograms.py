"""Percentile and entropy calibration in bounded memory.

ONNX Runtime's histogram calibrators (`HistogramCalibrater.collect_data`) keep every
frame's intermediate outputs until the data reader is exhausted, and then widen each
tensor's histogram by adding bins of its first histogram's width whenever a later batch
reaches further (`HistogramCollector.collect_absolute_value` and `merge_histogram`): a
tensor whose first values were all near zero grows by millions of bins. Both methods
were killed by the OOM killer at 24 GiB on the 442k-parameter face model.

Here the same augmented model (ORT's own calibrator builds it, every tensor to calibrate
made an output) runs one frame at a time, twice: first each tensor's range, then a
histogram of a fixed number of bins over that range. Memory is one frame's outputs plus
a few KB a tensor. The thresholds come from ORT's own percentile and entropy code,
handed those histograms, and reach `quantize_static` as its calibration cache.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from streamd.base.errors import InputError
from streamd.model.canonical import INPUT_NAME

PERCENTILE_BINS = 2048
"""Over |x| from 0 to the tensor's largest magnitude (ORT's default for percentile)."""
PERCENTILE = 99.999
ENTROPY_BINS = 1024
"""Over [-t, t], t the tensor's largest magnitude."""
ENTROPY_QUANTIZED_BINS = 256
"""Candidate thresholds are compared as 256-level (int8) distributions, 128 a side, as
TensorRT's entropy calibration does; ORT's default of 128 bins over both sides leaves a
single candidate, the whole range, and so is MinMax."""


def histogram_ranges(
    model: Path, images: Callable[[], Iterable[np.ndarray]], method: str, scratch: Path
) -> tuple[Path, Any]:
    """The calibration cache (ORT's TensorsData as JSON) for `method` and its CalibrationMethod.

    `images`: a fresh iterable of letterboxed frames each time it is called (two passes).
    """
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        HistogramCollector,
        TensorsData,
        create_calibrator,
        save_tensors_data,
    )

    calibration_method = {"percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}[method]
    calibrator = create_calibrator(
        model, None, augmented_model_path=str(scratch / "augmented.onnx"), calibrate_method=calibration_method
    )
    session = calibrator.infer_session
    names = [output.name for output in session.get_outputs()]
    wanted = [index for index, name in enumerate(names) if name in calibrator.tensors_to_calibrate]

    def outputs() -> Iterator[dict[str, np.ndarray]]:
        for image in images():
            values = session.run(None, {INPUT_NAME: image[np.newaxis]})
            yield {names[index]: values[index] for index in wanted}

    low: dict[str, float] = {}
    high: dict[str, float] = {}
    for frame in outputs():
        for name, value in frame.items():
            low[name] = min(low.get(name, np.inf), float(np.nanmin(value)))
            high[name] = max(high.get(name, -np.inf), float(np.nanmax(value)))
    if not low:
        raise InputError("no calibration frames")
    reach = {name: max(abs(low[name]), abs(high[name])) for name in low}
    counts: dict[str, np.ndarray] = {}
    for frame in outputs():
        for name, value in frame.items():
            if method == "percentile":
                found, _ = np.histogram(np.abs(value), bins=PERCENTILE_BINS, range=(0.0, reach[name] or 1.0))
            else:
                span = reach[name] or 1.0
                found, _ = np.histogram(value, bins=ENTROPY_BINS, range=(-span, span))
            counts[name] = counts.get(name, 0) + found

    collector = HistogramCollector(
        method=method,
        symmetric=method == "percentile",
        num_bins=PERCENTILE_BINS if method == "percentile" else ENTROPY_BINS,
        num_quantized_bins=ENTROPY_QUANTIZED_BINS,
        percentile=PERCENTILE,
        scenario="same",
    )
    for name, hist in counts.items():
        span = reach[name] or 1.0
        lowest, highest = np.array(low[name], np.float32), np.array(high[name], np.float32)
        if method == "percentile":
            edges = np.linspace(0.0, span, PERCENTILE_BINS + 1, dtype=np.float32)
            collector.histogram_dict[name] = (hist, edges, lowest, highest)
        else:
            edges = np.linspace(-span, span, ENTROPY_BINS + 1, dtype=np.float32)
            collector.histogram_dict[name] = (hist, edges, lowest, highest, np.array(span, np.float32))
    with contextlib.redirect_stdout(io.StringIO()):  # ORT prints its progress
        ranges = TensorsData(calibration_method, collector.compute_collection_result())
    cache = scratch / f"{method}-ranges.json"
    save_tensors_data(ranges, cache)
    return cache, calibration_method
