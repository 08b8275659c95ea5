"""The Grafana dashboard and the recording rules against a real Prometheus scraping a
real daemon on RTSP cameras: every panel's every query returns data (the GPU panels
none, on a machine without a GPU), and every recording rule produces series."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.testing.ports import free_port
from tests.support.daemon import spawn_streamd
from tests.support.environment import StartRtspServer, system_binary
from tests.support.prometheus import DEPLOY, RULES, Prometheus, wait_until

pytestmark = [pytest.mark.rtsp, pytest.mark.assets]

DASHBOARD = DEPLOY / "grafana" / "streamd.json"
GPU_PANELS = ("GPU utilisation", "GPU memory", "NVDEC utilisation", "GPU temperature", "GPU power", "NVDEC budget")


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target, with the variables set to "all"."""
    return [
        (panel["title"], target["expr"].replace("$instance", ".*").replace("$camera", ".*"))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def test_the_dashboard_is_importable_with_unique_ids_and_its_datasource_a_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"instance", "camera"} <= set(variables)
    text = DASHBOARD.read_text()
    datasources = [p["datasource"] for p in dashboard["panels"]]
    datasources += [t["datasource"] for p in dashboard["panels"] for t in p["targets"]]
    assert all(ds == {"type": "prometheus", "uid": "${datasource}"} for ds in datasources)
    assert '"uid": "${datasource}"' in text and "__inputs" in dashboard and dashboard["__inputs"] == []


@pytest.fixture
def prometheus_binary() -> str:
    return system_binary("prometheus", "prometheus")


@pytest.fixture
def scraped_daemon(
    rtsp_servers: StartRtspServer, test_video: Path, canonical_model: Path, tmp_path: Path, prometheus_binary: str
) -> Iterator[Prometheus]:
    server = rtsp_servers({"cam1": test_video, "cam2": test_video})
    port = free_port()
    config = tmp_path / "streams.yaml"
    config.write_text(
        f"metrics: {{listen: 127.0.0.1:{port}}}\n"
        f"engine: {{model: {canonical_model}}}\n"
        f"sinks: [{{path: {tmp_path / 'out.jsonl'}}}]\n"
        "cameras:\n" + "".join(f"  - {{id: {name}, url: '{server.url(name)}', fps: 5}}\n" for name in ("cam1", "cam2"))
    )
    daemon = spawn_streamd(config)
    prometheus = Prometheus(prometheus_binary, tmp_path, f"127.0.0.1:{port}")
    try:
        yield prometheus
    finally:
        prometheus.stop()
        daemon.terminate()
        daemon.communicate(timeout=30)


def test_every_panel_query_and_recording_rule_has_data_from_a_real_daemon(scraped_daemon: Prometheus) -> None:
    prometheus = scraped_daemon
    wait_until(lambda: prometheus.query('up{job="streamd"} == 1'), 60, "Prometheus to scrape streamd")
    # Rates need two samples of analysed frames and the rules an evaluation after them.
    wait_until(lambda: len(prometheus.query("camera:streamd_frames_analysed:rate1m > 0")) == 2, 90, "analysed rates")
    wait_until(lambda: prometheus.query("instance:streamd_latency_seconds:p99_5m > 0"), 30, "latency quantiles")

    dashboard = json.loads(DASHBOARD.read_text())
    empty, gpu_with_data = [], []
    for title, promql in panel_queries(dashboard):
        result = prometheus.query(promql)
        if title in GPU_PANELS:
            if result:
                gpu_with_data.append(title)
        elif not result:
            empty.append(f"{title}: {promql}")
    assert empty == [], "panels without data:\n" + "\n".join(empty)
    assert gpu_with_data == [], "no GPU here, so the GPU panels must be empty"
    assert {p["title"] for p in dashboard["panels"]} >= set(GPU_PANELS)

    groups = yaml.safe_load(RULES.read_text())["groups"]
    records = [rule["record"] for group in groups for rule in group["rules"] if "record" in rule]
    silent = [record for record in records if not prometheus.query(record)]
    assert silent == [], f"recording rules without series: {silent}"

    # The variables' label_values() read these series.
    assert prometheus.query("streamd_build_info")
    assert {r["metric"]["camera"] for r in prometheus.query('streamd_camera_up{instance=~".*"}')} == {"cam1", "cam2"}
