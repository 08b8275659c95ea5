"""`streamd gpu-check` (`make gpu-check`): prove the GPU path on a machine with an NVIDIA GPU, with figures.

The parts run in the daemon's own start order, so the check fails where the daemon
would: the CUDA primary context is set up for NVDEC first, then CuPy and TensorRT start
CUDA (as the engine and the GPU letterbox do before any camera opens), and only then
does NVDEC open, sharing that context.

1. the CUDA primary context given the flags FFmpeg's NVDEC needs (streamd.gpu.context);
2. the NVML figures streamd exports;
3. TensorRT, where installed and the model is there: engine build (or cache hit) and a
   batch of 8 against ONNX Runtime (detections per frame, score difference); SKIP with
   the reason where not;
4. the GPU letterbox kernel: compiled with NVRTC and checked against its NumPy twin;
5. NVDEC: 1080p H.264 decode frames/s with 1, 8 and 32 concurrent streams (frames kept
   on the GPU, as the daemon keeps them), against one CPU thread's rate;
6. the daemon's own path on real H.264: NVDEC through PyAV (`is_hw_owned`), DLPack, the
   letterbox kernel, and the memcpy into an engine input buffer. Compared per frame
   with the kernel's NumPy twin on the same planes (at most 1 level apart) and with
   the CPU path on the CPU-decoded frame (mean difference); time per letterbox.

Each part prints PASS, FAIL or SKIP with its reason, and a part that fails does not stop
the others (NVDEC missing still leaves the kernel and NVML checked); the exit status is
1 if any part failed.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
from av.codec.hwaccel import HWAccel

# The shared assets beside the checkout (or STREAMD_ASSETS): the model and a photo of faces.
ASSETS = Path(os.environ.get("STREAMD_ASSETS", Path(__file__).resolve().parents[3] / "shared" / "assets"))
CLIP_SECONDS = 10


def make_clip(path: Path, seconds: int = CLIP_SECONDS) -> Path:
    """A 1080p25 H.264 clip as cameras send it (no B-frames, a keyframe a second), with a
    moving texture so every frame costs the decoder real work; made once."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.mkv")
    y, x = np.mgrid[0:1080, 0:1920].astype(np.float32)
    with av.open(str(partial), "w") as output:
        stream = output.add_stream("libx264", rate=25, options={"bf": "0", "g": "25", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        for index in range(seconds * 25):
            shift = index * 6.0
            picture = np.stack(
                [128 + 100 * np.sin((x + shift) / 37.0), 128 + 100 * np.cos((y + shift) / 23.0), (x + y + shift) % 256],
                axis=-1,
            ).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    partial.replace(path)
    return path


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


def check_daemon_path(video: Path, frames: int = 50) -> bool:
    import cupy

    from streamd.frames.colour import colour_of
    from streamd.frames.letterbox import letterbox
    from streamd.gpu.preprocess import SELF_TEST_TOLERANCE, GpuLetterbox, copy_image_into
    from streamd.gpu.resample import letterbox_reference, plan_letterbox

    gpu = GpuLetterbox()  # compiles and self-tests the kernel
    buffer = cupy.empty((8, 640, 640, 3), cupy.uint8)  # an engine input buffer
    stream = cupy.cuda.Stream(non_blocking=True)  # the engine's own stream
    hwaccel = HWAccel(device_type="cuda", allow_software_fallback=False, is_hw_owned=True)
    worst, mean_vs_cpu, seconds, count = 0, 0.0, 0.0, 0
    with av.open(str(video), hwaccel=hwaccel) as hardware, av.open(str(video)) as software:
        for nvdec_frame, cpu_frame in zip(hardware.decode(video=0), software.decode(video=0), strict=False):
            if nvdec_frame.format.name != "cuda":
                print(f"  FAIL: NVDEC gave a {nvdec_frame.format.name} frame, not one on the GPU")
                return False
            start = time.perf_counter()
            image, _ = gpu.letterbox_frame(nvdec_frame, 640, 640)
            seconds += time.perf_counter() - start
            copy_image_into(buffer[count % 8], image, stream)
            stream.synchronize()
            in_buffer = buffer[count % 8].get()
            planes = nvdec_frame.reformat(format="nv12").to_ndarray()  # downloaded: the same samples
            height, width = nvdec_frame.height, nvdec_frame.width
            y, uv = planes[:height], planes[height:].reshape(height // 2, width // 2, 2)
            plan = plan_letterbox(width, height, 640, 640, width // 2, height // 2)
            twin = letterbox_reference(plan, y, uv, colour_of(nvdec_frame))
            worst = max(worst, int(np.abs(in_buffer.astype(int) - twin.astype(int)).max()))
            cpu, _ = letterbox(cpu_frame, 640, 640)
            mean_vs_cpu += float(np.abs(in_buffer.astype(int) - cpu.astype(int)).mean())
            count += 1
            if count >= frames:
                break
    ok = count > 0 and worst <= SELF_TEST_TOLERANCE and mean_vs_cpu / count <= 1.5
    print(f"  {count} frames NVDEC -> DLPack -> kernel -> engine buffer: largest difference from the NumPy twin "
          f"{worst} level(s), mean difference from the CPU path {mean_vs_cpu / max(count, 1):.2f}, "
          f"letterbox {1000 * seconds / max(count, 1):.2f} ms/frame -> {'PASS' if ok else 'FAIL'}")  # fmt: skip
    return ok


def check_primary_context() -> bool:
    from streamd.gpu.context import load_libcuda, share_primary_context

    driver = load_libcuda()
    if driver is None:
        print("  FAIL: no NVIDIA driver (libcuda.so.1 not found)")
        return False
    problem = share_primary_context(driver)
    print(f"  {problem or 'CU_CTX_SCHED_BLOCKING_SYNC set before any CUDA use'} -> {'FAIL' if problem else 'PASS'}")
    return problem is None


def check_letterbox_kernel() -> bool:
    from streamd.gpu.preprocess import SELF_TEST_TOLERANCE, GpuLetterbox

    worst = GpuLetterbox().self_test()  # compiled with NVRTC, then against its NumPy twin
    print(
        f"  compiled; largest difference from the NumPy twin {worst} level(s) (at most {SELF_TEST_TOLERANCE}) -> PASS"
    )
    return True


def _needs_nvdec(check: Callable[[], bool]) -> Callable[[], bool]:
    def run() -> bool:
        from streamd.camera.nvdec import nvdec_unavailable_reason

        reason = nvdec_unavailable_reason()
        if reason is not None:
            print(f"  FAIL: no NVDEC here: {reason}")
            return False
        return check()

    return run


def check_tensorrt(model: Path, photo: Path, work: Path) -> bool:
    from streamd.analysis.postprocess import PostprocessSettings, postprocess
    from streamd.config.schema import default_engine_cache
    from streamd.engine.onnxruntime_backend import OnnxRuntimeEngine
    from streamd.engine.tensorrt_backend import Profile, TensorRtEngine
    from streamd.frames.letterbox import letterbox, load_image
    from streamd.model.prepare import prepare_model

    if not model.exists():
        print(f"  SKIP: no model at {model} (--model)")
        return True
    if not photo.is_file():
        print(f"  SKIP: no photo of faces at {photo} (--photo)")
        return True
    canonical = prepare_model(model, work / "gpu-check.onnx").path
    picture, box = letterbox(load_image(str(photo)), 640, 640)
    batch = np.stack([picture] * 8)
    start = time.perf_counter()
    engine = TensorRtEngine(canonical, 8, Profile(1, 8, 32), default_engine_cache(Path.cwd(), os.environ))
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
    from streamd.metrics.gpu import GpuCollector

    collector = GpuCollector.create()
    if collector is None:
        print("  FAIL: NVML gave nothing (is nvidia-ml-py installed?)")
        return False
    for family in collector.collect():
        for sample in family.samples:
            print(f"  {sample.name}{{gpu={sample.labels['gpu']}}} {sample.value:g}")
    return True


def run_checks(args: argparse.Namespace) -> int:
    """Every part, each reporting PASS, FAIL or SKIP; 1 if any failed."""
    from streamd.engine.base import BackendUnavailable

    video = make_clip(args.work / f"clip-1080p25-{CLIP_SECONDS}s.mkv")
    model = args.model or ASSETS / "models" / "yolov5n-0.5.onnx"
    photo = args.photo or ASSETS / "images" / "group9.jpg"
    results = {}
    streams = [int(s) for s in args.streams.split(",")]
    parts: list[tuple[str, Callable[[], bool]]] = [
        ("CUDA primary context", check_primary_context),
        ("NVML", check_nvml),
        ("TensorRT", lambda: check_tensorrt(model, photo, args.work)),
        ("GPU letterbox kernel", check_letterbox_kernel),
        ("NVDEC decode", _needs_nvdec(lambda: check_nvdec(video, streams, args.seconds))),
        ("NVDEC -> GPU letterbox -> engine buffer", _needs_nvdec(lambda: check_daemon_path(video))),
    ]
    for name, part in parts:
        print(f"{name}:")
        try:
            results[name] = part()
        except ImportError as error:
            print(f"  SKIP: {error.name} is not installed")
            results[name] = True
        except BackendUnavailable as error:
            print(f"  SKIP: {error}")
            results[name] = True
        except Exception as error:  # noqa: BLE001 - every part reports, none stops the others
            print(f"  FAIL: {type(error).__name__}: {error}")
            results[name] = False
    failed = [name for name, ok in results.items() if not ok]
    print(
        f"gpu-check: {len(results) - len(failed)} passed or skipped, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else "")
    )
    return 1 if failed else 0
