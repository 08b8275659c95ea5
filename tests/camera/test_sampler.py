from __future__ import annotations

import pytest

from streamd.camera.sampler import FrameSampler


def taken(sampler: FrameSampler, timestamps: list[float]) -> list[float]:
    return [t for t in timestamps if sampler.take(t)]


def test_25fps_sampled_at_5fps_keeps_every_fifth_frame() -> None:
    timestamps = [i * 0.04 for i in range(250)]  # 10 s
    kept = taken(FrameSampler(5), timestamps)
    assert len(kept) == 50
    assert kept[:3] == pytest.approx([0.0, 0.2, 0.4])


def test_rate_is_kept_when_source_rate_is_not_a_multiple() -> None:
    timestamps = [i / 30 for i in range(30 * 60)]  # 30 fps for 60 s, analysed at 7 fps
    assert len(taken(FrameSampler(7), timestamps)) == pytest.approx(7 * 60, abs=1)


def test_timestamp_jitter_does_not_skip_frames() -> None:
    # 90 kHz RTP stamps rounded to whole ticks drift a little around the grid.
    timestamps = [round(i * 0.04 * 90000 + (-1) ** i) / 90000 for i in range(250)]
    assert len(taken(FrameSampler(5), timestamps)) == 50


def test_gap_restarts_the_grid_instead_of_bursting() -> None:
    sampler = FrameSampler(5)
    before = taken(sampler, [i * 0.04 for i in range(25)])  # 0..0.96 s
    after = taken(sampler, [10 + i * 0.04 for i in range(25)])  # 9 s gap
    assert len(before) == 5 and len(after) == 5
    assert after[0] == pytest.approx(10.0)


def test_clock_going_back_is_a_new_stream() -> None:
    sampler = FrameSampler(5)
    taken(sampler, [100 + i * 0.04 for i in range(25)])
    assert sampler.take(0.0), "first frame of the restarted clock must be taken"
    assert not sampler.take(0.04)


def test_higher_analysis_rate_than_source_takes_every_frame() -> None:
    timestamps = [i * 0.1 for i in range(50)]  # a 10 fps camera
    assert len(taken(FrameSampler(25), timestamps)) == 50


def test_rejects_non_positive_rate() -> None:
    with pytest.raises(ValueError, match="fps must be > 0"):
        FrameSampler(0)
