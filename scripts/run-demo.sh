#!/usr/bin/env bash
# `make run`: the demo model, demo cameras over RTSP on loopback, and the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin

# The model: streams.yaml loads the canonical engines/yolov5n-0.5.onnx, prepared from
# the YOLOv5-Face model in ../shared/assets (or $STREAMD_SOURCE_MODEL). Weights are
# never committed to the repository.
model=engines/yolov5n-0.5.onnx
source_model=${STREAMD_SOURCE_MODEL:-../shared/assets/models/yolov5n-0.5.onnx}
current_format() {  # a model prepared by an older streamd is prepared again
  "$bin/python" -c 'import sys; from streamd.model.canonical import read_canonical_info; read_canonical_info(sys.argv[1])' "$1" 2>/dev/null
}
if [ ! -f "$model" ] || [ "$source_model" -nt "$model" ] || ! current_format "$model"; then
  if [ ! -f "$source_model" ]; then
    echo "run-demo: no face model: put a YOLOv5-Face ONNX at $source_model or set STREAMD_SOURCE_MODEL" >&2
    exit 1
  fi
  "$bin/streamd" model prepare "$source_model" -o "$model"
fi

"$bin/streamd" testserver --demo 3 --port 8554 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM

# The first run encodes the demo clips (a few seconds each); the daemon would simply
# retry with backoff meanwhile, but a quiet start reads better.
for _ in $(seq 1 120); do
  (exec 3<>/dev/tcp/127.0.0.1/8554) 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { echo "run-demo: the RTSP test server failed to start" >&2; exit 1; }
  sleep 1
done

echo "run-demo: detections in out/detections.jsonl, metrics at http://127.0.0.1:9108/metrics (Ctrl-C stops)"
"$bin/streamd" run -c streams.yaml "$@"
