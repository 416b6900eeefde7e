"""Videos: frame bookkeeping and the success overlay without GL, and a real headless recording of the experts."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mtrl.errors import UserError
from mtrl.eval.video import GREEN, RED, VideoRecorder, annotate, write_video
from tests.conftest import run_cli


class _FakeTaskEnv:
    def __init__(self, value: int):
        self.value = value

    def render(self):
        return np.full((48, 64, 3), self.value, dtype=np.uint8)


def _step(success, done):
    done = np.asarray(done)
    return SimpleNamespace(success=np.asarray(success), terminated=np.zeros_like(done), truncated=done)


def test_recorder_keeps_the_first_episodes_with_the_success_flag():
    env = SimpleNamespace(vector_env=SimpleNamespace(envs=[_FakeTaskEnv(10), _FakeTaskEnv(200)]))
    recorder = VideoRecorder(["a", "b"], episodes=2)
    horizon = 3
    for _episode in range(3):
        for t in range(horizon):
            recorder.before_step(env)
            recorder.after_step(_step([t == 1, False], [t == horizon - 1] * 2))
    assert [len(f) for f in recorder.frames] == [2 * horizon, 2 * horizon]  # the third episode is not kept
    # frame t shows the flag of step t-1: task a succeeded at step 1, so its frame 2 has a green border
    assert tuple(recorder.frames[0][2][0, 0]) == GREEN and tuple(recorder.frames[0][1][0, 0]) == RED
    assert tuple(recorder.frames[1][2][0, 0]) == RED
    with pytest.raises(UserError, match="video_episodes=0"):
        VideoRecorder(["a"], episodes=0)


def test_recorder_streams_mp4_and_writes_gif_files(tmp_path):
    import imageio.v2 as imageio
    from PIL import Image

    env = SimpleNamespace(vector_env=SimpleNamespace(envs=[_FakeTaskEnv(10), _FakeTaskEnv(200)]))
    for fmt in ("mp4", "gif"):
        recorder = VideoRecorder(["a", "b"], episodes=1, directory=tmp_path / fmt, fmt=fmt, fps=10)
        for t in range(5):
            recorder.before_step(env)
            recorder.after_step(_step([False, t > 2], [t == 4] * 2))
        recorder.before_step(env)  # both slots are done: nothing more is rendered
        paths = recorder.finish()
        assert paths == [tmp_path / fmt / f"a.{fmt}", tmp_path / fmt / f"b.{fmt}"]
        assert recorder.frame_counts.tolist() == [5, 5]
        if fmt == "mp4":
            reader = imageio.get_reader(str(paths[1]), format="FFMPEG")
            assert reader.count_frames() == 5
            reader.close()
        else:
            assert Image.open(paths[1]).n_frames == 5
    with pytest.raises(UserError, match="video_format=avi"):
        VideoRecorder(["a"], directory=tmp_path, fmt="avi")


def test_annotation_keeps_the_frame_size_and_gif_writes(tmp_path):
    frame = np.zeros((120, 160, 3), dtype=np.uint8)
    out = annotate(frame, "reach-v3", 0, 5, True, True)
    assert out.shape == frame.shape and tuple(out[0, 0]) == GREEN and out[60, 80].sum() == 0
    path = write_video(tmp_path / "x.gif", [out, annotate(frame, "reach-v3", 0, 6, False, True)], fps=10)
    from PIL import Image

    assert Image.open(path).n_frames == 2


def test_scripted_policy_recording_is_a_playable_mp4_with_one_frame_per_step(tmp_path):
    horizon = 20
    proc = run_cli(
        "evaluate.py",
        "policy=scripted",
        "env=mt10",
        "env.tasks=[reach-v3]",
        "env.protocol=mtrl",
        f"env.horizon={horizon}",
        "record=true",
        f"output={tmp_path / 'eval.json'}",
        timeout=300,
    )
    if proc.returncode == 2 and "cannot render MuJoCo frames" in proc.stderr:
        pytest.skip(f"no OpenGL backend for headless MuJoCo rendering here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    video = tmp_path / "eval_videos" / "reach-v3.mp4"
    assert video.is_file() and f"wrote {video}" in proc.stdout
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(video), format="FFMPEG")
    try:
        assert reader.count_frames() == horizon
        assert reader.get_meta_data()["codec"] == "h264"
        first = reader.get_data(0)
    finally:
        reader.close()
    assert first.shape == (480, 480, 3) and first.std() > 10  # a rendered scene, not a blank frame


@pytest.mark.slow
def test_a_successful_expert_episode_ends_on_green_frames(tmp_path):
    proc = run_cli(
        "evaluate.py",
        "policy=scripted",
        "env=mt10",
        "env.tasks=[reach-v3]",
        "env.protocol=mtrl",
        "env.horizon=60",
        "record=true",
        f"output={tmp_path / 'eval.json'}",
        timeout=600,
    )
    if proc.returncode == 2 and "cannot render MuJoCo frames" in proc.stderr:
        pytest.skip(f"no OpenGL backend for headless MuJoCo rendering here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(tmp_path / "eval_videos" / "reach-v3.mp4"), format="FFMPEG")
    try:
        first, last = reader.get_data(0), reader.get_data(59)
    finally:
        reader.close()
    red, green = first[3, 240].astype(int), last[3, 240].astype(int)  # the border, top middle
    assert red[0] > red[1] + 80 and green[1] > green[0] + 80
