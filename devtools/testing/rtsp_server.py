"""RTSP test server: gst-rtsp-server serving H.264 Matroska files like live cameras.

Run by Debian's own /usr/bin/python3, whose `gi` module is not in the virtual
environment, so this file imports nothing but the standard library and GObject
introspection. `devtools.testing.rtsp` starts and stops it.

Each mount loads its file's access units once (GStreamer demuxes it) and a feeder thread
per client session pushes them into an `appsrc` at the file's real frame rate, looping
forever. Each buffer is stamped frame index / fps, so timestamps keep advancing across
loops, like a camera that never stops. Every session starts at the
first access unit, a keyframe with SPS/PPS, so a client decodes from its first frame.

Prints `READY <port>` on stdout once it listens.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtsp, GstRtspServer  # noqa: E402

AccessUnits = list[bytes]


def load_access_units(path: str) -> tuple[AccessUnits, Gst.Caps, float]:
    """Demux `path` to byte-stream H.264 access units, SPS/PPS before every keyframe."""
    pipeline = Gst.parse_launch(
        f'filesrc location="{path}" ! matroskademux ! h264parse config-interval=-1 ! '
        "video/x-h264,stream-format=byte-stream,alignment=au ! "
        "appsink name=sink sync=false"
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    units: AccessUnits = []
    caps = None
    while True:
        sample = sink.emit("pull-sample")
        if sample is None:
            break
        caps = caps or sample.get_caps()
        buffer = sample.get_buffer()
        units.append(buffer.extract_dup(0, buffer.get_size()))
    pipeline.set_state(Gst.State.NULL)
    if not units or caps is None:
        raise SystemExit(f"rtsp_server: no H.264 video in {path}")
    structure = caps.get_structure(0)
    ok, num, den = structure.get_fraction("framerate")
    fps = num / den if ok and num > 0 else 25.0
    return units, caps, fps


class Feeder(threading.Thread):
    """Pushes one session's access units at the real frame rate until the media goes."""

    def __init__(self, appsrc: GstApp.AppSrc, units: AccessUnits, fps: float) -> None:
        super().__init__(daemon=True)
        self.appsrc, self.units, self.interval = appsrc, units, 1.0 / fps

    def run(self) -> None:
        start = time.monotonic()
        index = 0
        while True:
            delay = start + index * self.interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            data = self.units[index % len(self.units)]
            buffer = Gst.Buffer.new_wrapped(data)
            # Explicit, ever-increasing timestamps: the sinks pace on them, and they
            # run on across loops of the clip like a camera's clock.
            buffer.pts = buffer.dts = int(index * self.interval * Gst.SECOND)
            buffer.duration = int(self.interval * Gst.SECOND)
            if self.appsrc.emit("push-buffer", buffer) != Gst.FlowReturn.OK:
                return  # the client went away and the media was torn down
            index += 1


class LoopingFactory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, units: AccessUnits, caps: Gst.Caps, fps: float) -> None:
        super().__init__()
        self.units, self.caps, self.fps = units, caps, fps
        self.set_launch(
            "( appsrc name=src is-live=true format=time "
            "min-latency=0 max-bytes=2000000 block=true ! "
            "rtph264pay name=pay0 pt=96 )"
        )
        self.set_shared(False)
        self.connect("media-configure", self._on_configure)

    def _on_configure(self, _factory: object, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_by_name("src")
        appsrc.set_property("caps", self.caps)
        Feeder(appsrc, self.units, self.fps).start()


def _add_auth(server: GstRtspServer.RTSPServer, credentials: str) -> GstRtspServer.RTSPPermissions:
    user, _, password = credentials.partition(":")
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", "user")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role("user", "media.factory.access", True)
    permissions.add_permission_for_role("user", "media.factory.construct", True)
    return permissions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--mount",
        action="append",
        default=[],
        metavar="NAME=FILE.mkv",
        required=True,
        help="serve FILE.mkv at rtsp://HOST:PORT/NAME (repeatable)",
    )
    parser.add_argument("--auth-file", help="a file holding user:password; every mount then requires it")
    parser.add_argument(
        "--transports",
        default="tcp,udp",
        help="RTSP lower transports offered, comma-separated (udp alone: TCP SETUPs get 461, as VLC's do)",
    )
    args = parser.parse_args(argv)
    # A parent may have blocked these (the mask survives exec); we must hear them.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    permissions = None
    if args.auth_file:
        with open(args.auth_file, encoding="utf-8") as handle:
            permissions = _add_auth(server, handle.read().strip())
    mounts = server.get_mount_points()
    loaded: dict[str, tuple[AccessUnits, Gst.Caps, float]] = {}
    flags = {"udp": GstRtsp.RTSPLowerTrans.UDP, "tcp": GstRtsp.RTSPLowerTrans.TCP}
    transports = GstRtsp.RTSPLowerTrans(0)
    for name in args.transports.split(","):
        transports |= flags[name.strip()]
    for item in args.mount:
        name, _, path = item.partition("=")
        if path not in loaded:
            loaded[path] = load_access_units(path)
        factory = LoopingFactory(*loaded[path])
        factory.set_protocols(transports)
        if permissions is not None:
            factory.set_permissions(permissions)
        mounts.add_factory("/" + name.strip("/"), factory)

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 1
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
