"""`/`: a small page for a person at the box: every camera, its state, rates and latest
analysed frame. It reloads itself every few seconds; everything on it comes from
`/status` (already masked) and `/cameras/<id>/latest.jpg` (left out when the listener
shows no pictures)."""

from __future__ import annotations

import html
from typing import Any

REFRESH_S = 5

_STYLE = """
body { font-family: sans-serif; margin: 1em; background: #fafafa; }
.cameras { display: flex; flex-wrap: wrap; gap: 1em; }
.camera { background: white; border: 1px solid #ccc; padding: 0.5em; width: 480px; }
.camera img { width: 480px; background: #eee; display: block; min-height: 40px; }
.streaming { color: #080; } .backoff, .starting { color: #b60; } .failed, .stopped { color: #b00; }
td { padding-right: 1em; }
.faces { display: flex; gap: 4px; } .faces img.face { width: 76px; height: auto; min-height: 0; }
"""


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _best_faces(cid: str, tracks: dict[str, Any] | None, pictures: bool) -> str:
    """The camera's open tracks and the best faces of its last ended ones."""
    if tracks is None:
        return ""
    faces = "".join(
        f'<img class="face" alt="best face of track {int(track)}" title="track {int(track)}" '
        f'src="/cameras/{cid}/best/{int(track)}.jpg">'
        for track in tracks["best_faces"]
    )
    return f"<p>{int(tracks['active'])} track(s) open</p>" + (f'<div class="faces">{faces}</div>' if pictures else "")


def render(status: dict[str, Any], pictures: bool = True) -> bytes:
    cards = []
    for camera in status["cameras"]:
        cid = html.escape(camera["id"])
        state = html.escape(camera["state"])
        reason = f" ({html.escape(camera['reason'])})" if camera.get("reason") else ""
        cards.append(
            f'<div class="camera" id="camera-{cid}"><h2>{cid}</h2>'
            f'<p class="{state}">{state}{reason} &middot; {html.escape(str(camera["decoder"]))}</p>'
            f"<table><tr><td>analysed</td><td>{_rate(camera['analysed_fps'])} fps "
            f"of {camera['fps_target']:g}</td></tr>"
            f"<tr><td>sampled</td><td>{_rate(camera['sampled_fps'])} fps</td></tr>"
            f"<tr><td>decoded</td><td>{_rate(camera['decoded_fps'])} fps</td></tr>"
            f"<tr><td>reconnects</td><td>{camera['reconnects']}</td></tr></table>"
            + (
                f'<img alt="latest analysed frame of {cid}" src="/cameras/{cid}/latest.jpg" '
                "onload=\"this.dataset.loaded='yes'\" onerror=\"this.dataset.loaded='no'\">"
                if pictures
                else ""
            )
            + _best_faces(cid, camera.get("tracks"), pictures)
            + "</div>"
        )
    summary = html.escape(status["summary"])
    page = (
        '<!doctype html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}"><title>streamd</title>'
        f"<style>{_STYLE}</style></head><body><h1>streamd</h1><p>{summary}</p>"
        f'<div class="cameras">{"".join(cards)}</div></body></html>\n'
    )
    return page.encode()
