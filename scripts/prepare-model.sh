#!/usr/bin/env bash
# The demo model for `make run`, `make soak` and `make int8-report`: the canonical
# engines/yolov5n-0.5.onnx, prepared from the YOLOv5-Face model in ../shared/assets (or
# $STREAMD_SOURCE_MODEL) when it is missing, older than its source, or in a format an
# older streamd wrote. Weights are never committed to the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
model=engines/yolov5n-0.5.onnx
source_model=${STREAMD_SOURCE_MODEL:-../shared/assets/models/yolov5n-0.5.onnx}

current_format() {
  "$bin/python" -c 'import sys; from streamd.model.canonical import read_canonical_info; read_canonical_info(sys.argv[1])' "$1" 2>/dev/null
}
if [ ! -f "$model" ] || [ "$source_model" -nt "$model" ] || ! current_format "$model"; then
  if [ ! -f "$source_model" ]; then
    echo "no face model: put a YOLOv5-Face ONNX at $source_model or set STREAMD_SOURCE_MODEL" >&2
    exit 1
  fi
  "$bin/streamd" model prepare "$source_model" -o "$model" >&2
fi
echo "$model"
