#!/usr/bin/env bash
# `make install`: streamd as a systemd service. Copies the project to /opt/streamd with
# its virtual environment, creates the `streamd` user, puts a starting streams.yaml in
# /etc/streamd (kept if present) and installs the unit. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "install-service: run as root" >&2; exit 1; }

prefix=/opt/streamd
id streamd >/dev/null 2>&1 || useradd --system --home-dir /var/lib/streamd --shell /usr/sbin/nologin streamd
mkdir -p "$prefix" /etc/streamd
cp -r streamd pyproject.toml README.md docs "$prefix"/
python3 -m venv "$prefix/.venv"
"$prefix/.venv/bin/pip" install --quiet "$prefix[speed]"
if [ ! -f /etc/streamd/streams.yaml ]; then
  sed 's#out/detections.jsonl#/var/lib/streamd/detections.jsonl#; s#engines/yolov5n-0.5.onnx#/var/lib/streamd/engines/yolov5n-0.5.onnx#' \
    streams.yaml > /etc/streamd/streams.yaml
  echo "install-service: edit /etc/streamd/streams.yaml (cameras, model) before starting"
fi
chown -R root:streamd /etc/streamd && chmod 0750 /etc/streamd
install -m 0644 deploy/streamd.service /etc/systemd/system/streamd.service
# One instance per GPU on one streams.yaml: STREAMD_SHARDS=N in /etc/streamd/shards.env,
# then `systemctl enable --now streamd@0 ... streamd@N-1` instead of streamd.
install -m 0644 deploy/streamd@.service /etc/systemd/system/streamd@.service
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "install-service: systemctl enable --now streamd"
else
  echo "install-service: unit installed; this machine does not run systemd"
fi
