#!/usr/bin/env bash
# `make run`: the demo model, demo cameras over RTSP on loopback, and the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin

# The model: streams.yaml loads the canonical engines/yolov5n-0.5.onnx.
./scripts/prepare-model.sh >/dev/null

"$bin/python" -m devtools.testserver --demo 3 --port 8554 &
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
