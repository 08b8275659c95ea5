from __future__ import annotations

import av.error
import pytest

from streamd.camera.errors import CameraError, Reason, classify, explain_unreachable


def ffmpeg_error(kind: type[Exception], errno: int, text: str) -> Exception:
    return kind(errno, text, "rtsp://admin:hunter2@h/x")


@pytest.mark.parametrize(
    ("error", "streaming", "reason"),
    [
        (
            ffmpeg_error(av.error.HTTPUnauthorizedError, 0, "Server returned 401 Unauthorized"),
            False,
            Reason.unauthorized,
        ),
        (ffmpeg_error(av.error.HTTPNotFoundError, 0, "Server returned 404 Not Found"), False, Reason.not_found),
        (ffmpeg_error(av.error.ConnectionRefusedError, 111, "Connection refused"), False, Reason.connection_refused),
        (ffmpeg_error(av.error.ExitError, 0, "Immediate exit requested"), False, Reason.timeout),
        (ffmpeg_error(av.error.ExitError, 0, "Immediate exit requested"), True, Reason.stalled),
        (ffmpeg_error(av.error.InvalidDataError, 0, "Invalid data"), True, Reason.invalid_data),
        (OSError(113, "No route to host"), False, Reason.unreachable),
        (RuntimeError("surprise"), False, Reason.error),
    ],
)
def test_classify(error: Exception, streaming: bool, reason: Reason) -> None:
    result = classify(error, streaming)
    assert result.reason is reason
    assert "hunter2" not in str(result)


def test_permanent_reasons_are_not_retried() -> None:
    assert CameraError(Reason.unsupported_codec, "x").permanent
    assert CameraError(Reason.nvdec_unavailable, "x").permanent
    assert not CameraError(Reason.unauthorized, "x").permanent
    assert not CameraError(Reason.stalled, "x").permanent


def test_a_name_that_does_not_resolve_is_said_so_not_input_output_error() -> None:
    url = "rtsp://viewer:pw-Qk@nosuchhost.invalid/x"
    with pytest.raises(av.error.FFmpegError) as caught:
        av.open(url, options={"rtsp_transport": "tcp"}, timeout=5)
    vague = classify(caught.value, streaming=False)
    assert vague.reason is Reason.unreachable and "Input/output error" in str(vague), "the premise"
    clear = explain_unreachable(url, vague)
    assert clear.reason is Reason.unreachable
    assert str(clear).startswith("cannot resolve host 'nosuchhost.invalid': ")
    reachable = explain_unreachable("rtsp://127.0.0.1/x", vague)
    assert reachable is vague
