"""`make gpu-check`: prove the GPU path on a machine with an NVIDIA GPU, with figures.

1. NVDEC: 1080p H.264 decode frames/s with 1, 8 and 32 concurrent streams (frames kept
   on the GPU, as the daemon would), against one CPU thread's rate;
2. GPU letterbox against the CPU's (mean and largest difference in levels);
3. TensorRT, where installed: engine build (or cache hit) and a batch of 8 against
   ONNX Runtime (detections per frame, score difference);
4. the NVML figures streamd exports.

Each part prints PASS, FAIL or SKIP with its reason; the exit status is 1 if any part
failed or no GPU was found.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
from av.codec.hwaccel import HWAccel

from streamd.testing.demo import ASSETS, CACHE_DIR, shared_image
from streamd.testing.video import VideoSpec, cached_video


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streams", default="1,8,32", help="concurrent NVDEC streams to measure")
    parser.add_argument("--seconds", type=float, default=8.0, help="decode time per measurement")
    parser.add_argument("--model", type=Path, default=ASSETS / "models" / "yolov5n-0.5.onnx")


def _decode_rate(video: Path, streams: int, seconds: float, hw: bool) -> float:
    counts = [0] * streams
    stop_at = time.perf_counter() + seconds
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            while time.perf_counter() < stop_at:
                hwaccel = HWAccel(device_type="cuda", allow_software_fallback=False, is_hw_owned=True) if hw else None
                with av.open(str(video), hwaccel=hwaccel) as container:
                    stream = container.streams.video[0]
                    stream.codec_context.thread_count = 1
                    for _ in container.decode(stream):
                        counts[index] += 1
                        if time.perf_counter() >= stop_at:
                            return
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(counts) / seconds


def check_nvdec(video: Path, streams: list[int], seconds: float) -> bool:
    cpu = _decode_rate(video, 1, seconds / 2, hw=False)
    print(f"  CPU, 1 thread: {cpu:.0f} frames/s")
    for count in streams:
        rate = _decode_rate(video, count, seconds, hw=True)
        print(f"  NVDEC, {count:2d} streams: {rate:.0f} frames/s ({rate / cpu:.1f}x one CPU thread)")
    return True


def check_preprocess(video: Path) -> bool:
    import cupy

    from streamd.gpu.preprocess import GpuLetterbox, matrix_for
    from streamd.preprocess import letterbox

    with av.open(str(video)) as container:
        frame = next(container.decode(video=0)).reformat(format="nv12")
    cpu, box = letterbox(frame, 640, 640)
    planes = frame.to_ndarray()
    out = cupy.empty((640, 640, 3), cupy.uint8)
    GpuLetterbox().nv12_into(
        cupy.asarray(planes[: frame.height]), cupy.asarray(planes[frame.height :]), box, out, matrix_for(None)
    )
    difference = np.abs(out.get().astype(int) - cpu.astype(int))
    ok = bool(difference.mean() < 4.0)
    verdict = "PASS" if ok else "FAIL"
    print(f"  GPU vs CPU letterbox: mean {difference.mean():.2f} levels, largest {difference.max()} -> {verdict}")
    return ok


def check_tensorrt(model: Path) -> bool:
    from streamd.engine.onnxruntime_backend import OnnxRuntimeEngine
    from streamd.engine.tensorrt_backend import Profile, TensorRtEngine
    from streamd.model.prepare import prepare_model
    from streamd.postprocess import PostprocessSettings, postprocess
    from streamd.preprocess import letterbox, load_image

    canonical = prepare_model(model, Path("engines") / "gpu-check.onnx").path
    image = shared_image("group9.jpg")
    if image is None:
        print("  SKIP: no shared photo for the comparison")
        return True
    picture, box = letterbox(load_image(str(image)), 640, 640)
    batch = np.stack([picture] * 8)
    start = time.perf_counter()
    engine = TensorRtEngine(canonical, 8, Profile(1, 8, 32), Path("engines/cache"))
    print(f"  engine ready in {time.perf_counter() - start:.1f}s (built or from the cache)")
    rows = engine.infer(batch)
    start = time.perf_counter()
    for _ in range(20):
        engine.infer(batch)
    rate = 20 * 8 / (time.perf_counter() - start)
    reference = OnnxRuntimeEngine(canonical, 8, providers=["CPUExecutionProvider"]).infer(batch)
    ours = postprocess(rows[0], box, PostprocessSettings())
    theirs = postprocess(reference[0], box, PostprocessSettings())
    drift = float(np.abs(np.sort(ours.scores) - np.sort(theirs.scores)).max()) if len(ours) == len(theirs) else 1.0
    ok = len(ours) == len(theirs) and drift < 0.02
    print(f"  batch 8: {len(ours)} faces (ONNX Runtime {len(theirs)}), score drift {drift:.4f}, "
          f"{rate:.0f} frames/s incl. copies -> {'PASS' if ok else 'FAIL'}")  # fmt: skip
    return ok


def check_nvml() -> bool:
    from streamd.gpu_metrics import GpuCollector

    collector = GpuCollector.create()
    if collector is None:
        print("  FAIL: NVML gave nothing (is nvidia-ml-py installed?)")
        return False
    for family in collector.collect():
        for sample in family.samples:
            print(f"  {sample.name}{{gpu={sample.labels['gpu']}}} {sample.value:g}")
    return True


def main(args: argparse.Namespace) -> int:
    from streamd.camera.nvdec import nvdec_unavailable_reason

    reason = nvdec_unavailable_reason()
    if reason is not None:
        print(f"gpu-check: no usable NVIDIA GPU here: {reason}")
        return 1
    image = shared_image("street_bus.jpg")
    video = cached_video(VideoSpec(seconds=10, image=str(image) if image else None), CACHE_DIR)
    results = {}
    streams = [int(s) for s in args.streams.split(",")]
    parts: list[tuple[str, Callable[[], bool]]] = [
        ("NVDEC decode", lambda: check_nvdec(video, streams, args.seconds)),
        ("GPU preprocessing", lambda: check_preprocess(video)),
        ("TensorRT", lambda: check_tensorrt(args.model)),
        ("NVML", check_nvml),
    ]
    for name, part in parts:
        print(f"{name}:")
        try:
            results[name] = part()
        except ImportError as error:
            print(f"  SKIP: {error.name} is not installed")
            results[name] = True
        except Exception as error:  # noqa: BLE001 - every part reports, none stops the others
            print(f"  FAIL: {type(error).__name__}: {error}")
            results[name] = False
    return 0 if all(results.values()) else 1
