#!/usr/bin/env bash
# `make int8-report`: the whole INT8 chain on frames made from the shared photos with
# the shared model: prepare -> demo cameras (pans across the photos, replayed from
# files) -> calibrate collect -> choose (every method, with and without float layers,
# judged on held-out camera frames and crowd scenes) -> report on held-out camera frames,
# crowd scenes and crowd mosaics (faces 10 to 30 px, where INT8 loses first); exit 1 on a FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
work=calibration/demo
mkdir -p "$work"

./scripts/prepare-model.sh >/dev/null
source_model=${STREAMD_SOURCE_MODEL:-../shared/assets/models/yolov5n-0.5.onnx}

# Demo cameras as local files: the same 1080p pans the RTSP demo serves.
"$bin/python" - "$work/streams.yaml" <<'PY'
import sys
from devtools.testing.demo import demo_videos
cameras = "".join(f"  - {{id: {name}, url: '{path}', fps: 5}}\n" for name, path in demo_videos(3).items())
open(sys.argv[1], "w").write("metrics: {listen: 127.0.0.1:9199}\ncameras:\n" + cameras)
PY

rm -rf "$work/frames"
"$bin/streamd" --log-level WARNING calibrate collect -c "$work/streams.yaml" -o "$work/frames" -n 90 --interval 0.3 --held-out 0.25 --timeout 120
# Held-out crowd scenes: hundreds of small faces blended into 1920x1080 frames, no mosaic seams.
rm -rf "$work/scenes"
"$bin/streamd" --log-level WARNING calibrate crowd "$(dirname "$source_model")"/../images/*.jpg \
  --model engines/yolov5n-0.5.onnx -o "$work/scenes" -n 12 --seed 202 --scene
# Every method, with and without the sensitive layers in float; the one that agrees best wins.
"$bin/streamd" --log-level WARNING calibrate choose engines/yolov5n-0.5.onnx --frames "$work/frames" \
  --held-out "$work/frames" --held-out "$work/scenes" -o engines/yolov5n-0.5.int8.onnx
echo "== held-out camera frames"
"$bin/streamd" --log-level WARNING calibrate report engines/yolov5n-0.5.onnx engines/yolov5n-0.5.int8.onnx --frames "$work/frames"
echo "== held-out crowd scenes (1920x1080, faces 10 to 30 px in the model input)"
"$bin/streamd" --log-level WARNING calibrate report engines/yolov5n-0.5.onnx engines/yolov5n-0.5.int8.onnx --frames "$work/scenes"
echo "== held-out crowd mosaics (faces 10 to 30 px)"
rm -rf "$work/crowd"
"$bin/streamd" --log-level WARNING calibrate crowd "$(dirname "$source_model")"/../images/*.jpg \
  --model engines/yolov5n-0.5.onnx -o "$work/crowd" -n 12 --seed 101
"$bin/streamd" --log-level WARNING calibrate report engines/yolov5n-0.5.onnx engines/yolov5n-0.5.int8.onnx --frames "$work/crowd"
