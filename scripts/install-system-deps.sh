#!/usr/bin/env bash
# Debian/Ubuntu packages streamd's set-up needs: venv support for the project's own
# environment, GStreamer's RTSP server (driven by Debian's /usr/bin/python3) for the
# demo cameras and the tests, Prometheus (with promtool) for the tests of the alert
# rules and the dashboard, redis-server and mosquitto for the broker sinks' tests,
# headless Chromium for the status page's, systemd for `systemd-analyze verify` of the
# unit files, and libGL for OpenCV, which the `trackers` library imports (the tests
# start their own servers on free ports; nothing here is started as a service).
# Installs only what is missing; needs root for that.
set -euo pipefail

packages=(
  python3-venv
  python3-gi
  gir1.2-gst-rtsp-server-1.0
  gstreamer1.0-rtsp
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad
  curl
  prometheus
  redis-server
  mosquitto
  chromium
  systemd
  libgl1
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps: missing Debian packages: ${missing[*]}" >&2
  echo "install-system-deps: run as root, or: sudo apt-get install ${missing[*]}" >&2
  echo "install-system-deps: tests that need them will be skipped" >&2
  exit 0
fi
echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
