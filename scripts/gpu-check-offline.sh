#!/usr/bin/env bash
# The GPU check on an offline NVIDIA box with its own system Python (no apt, no venv, no
# package index), as ../shared/gpu/RUNBOOK.md describes. Such a box has Python 3.12, CuPy,
# nvidia-ml-py, onnx, onnxruntime, numpy, prometheus-client and PyYAML, but not PyAV or
# the rest of streamd's pure-Python dependencies.
#
#   scripts/gpu-check-offline.sh prepare     here, where the registries answer: fills
#       .gpucheck/ with those wheels (for CPython 3.12 on x86-64 Linux, pinned to the
#       versions this checkout's .venv runs; GPUCHECK_PYTHON=3.11 for another Python), the
#       shared assets and the runbook's probes;
#       copy the project root, .gpucheck/ included, to the box
#   scripts/gpu-check-offline.sh run OUTDIR  there, in the copied project root: installs
#       the wheels into /tmp/streamd-site (no index, no compile), then runs the runbook's
#       probes and `streamd gpu-check`, each logged to OUTDIR; exits as gpu-check does
set -euo pipefail
cd "$(dirname "$0")/.."
pack=.gpucheck
# streamd's dependencies a GPU box of the runbook lacks (pure Python or small binary wheels).
carried=(av pydantic pydantic-core annotated-types typing-inspection typing-extensions orjson h11 bcrypt
  watchfiles anyio idna redis paho-mqtt)

case "${1:-}" in
prepare)
  rm -rf "$pack" && mkdir -p "$pack/whl" "$pack/assets"
  cp -r ../shared/assets/. "$pack/assets/"
  cp ../shared/gpu/probes.py "$pack/"
  pins=()
  for name in "${carried[@]}"; do
    pins+=("$name==$(.venv/bin/python -c 'import sys, importlib.metadata as m; print(m.version(sys.argv[1]))' "$name")")
  done
  .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version "${GPUCHECK_PYTHON:-3.12}" \
    --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$pack/whl" "${pins[@]}"
  echo "$pack: $(ls "$pack/whl" | wc -l) wheels, $(du -sh "$pack" | cut -f1); copy the project root to the GPU box"
  ;;
run)
  out=${2:?usage: scripts/gpu-check-offline.sh run OUTDIR}
  mkdir -p "$out"
  site=/tmp/streamd-site
  python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$pack"/whl/*.whl
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 CUPY_CACHE_DIR=/tmp/streamd-cupy-cache
  export STREAMD_ASSETS="$PWD/$pack/assets" STREAMD_CACHE=/tmp/streamd-gpucheck-cache
  {
    date -u
    nvidia-smi -L || true
    ldconfig -p | grep -E 'libcuda\.so\.1|libnvcuvid\.so\.1' || true
  } 2>&1 | tee "$out/gpu.txt"
  timeout 150 python3 "$pack/probes.py" 2>&1 | tee "$out/probes.log" || true
  set -o pipefail
  timeout 420 python3 -m streamd --log-level WARNING gpu-check 2>&1 | tee "$out/gpu-check.log"
  ;;
*)
  echo "usage: $0 prepare | run OUTDIR" >&2
  exit 2
  ;;
esac
