"""Videos of an evaluated policy: one file per task, rendered headless, with the success flag on every frame.

`VideoRecorder` is an `evaluate()` hook: before each vector step it renders the current state of every task
slot that still needs frames, after the step it records the step's success flag. Frame t of an episode shows
the state after t actions (frame 0 is the reset state), so an episode of horizon H gives H frames (with
same-step autoreset the state after the last action is replaced by the next reset before it can be drawn).

Each frame gets a coloured border, green where Meta-World's per-step success flag is 1 and red where it is 0,
and a caption with the task, episode, step and whether the episode has succeeded so far.

Rendering needs an OpenGL backend: headless, set `MUJOCO_GL=egl` (libEGL, e.g. Debian's libegl1) before
Python starts; `MUJOCO_GL=osmesa` is the software fallback where it is installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from envs.vector import MultiTaskVectorEnv, StepResult
from mtrl.config.schema import VideoConfig
from mtrl.errors import UserError

FORMATS = ("mp4", "gif")
GREEN = (40, 200, 70)
RED = (220, 50, 50)
BORDER = 8


class RenderingUnavailable(UserError):
    """No OpenGL backend could render a MuJoCo frame in this process."""


def rendering_hint() -> str:
    backend = os.environ.get("MUJOCO_GL")
    now = f"MUJOCO_GL={backend}" if backend else "MUJOCO_GL is not set"
    return (
        f"{now}; for headless rendering start Python with MUJOCO_GL=egl (needs libEGL, e.g. apt-get install "
        f"libegl1) or MUJOCO_GL=osmesa (needs libosmesa6)"
    )


class VideoRecorder:
    """Annotated frames of the first `episodes` evaluation episodes of every task slot.

    With `directory`, MP4 frames stream to `<directory>/<task>.mp4` as they are rendered (GIFs are written by
    `finish()`); without it, frames stay in `self.frames` (for tests and library use).
    """

    def __init__(
        self,
        task_names: Sequence[str],
        episodes: int = 1,
        directory: Path | None = None,
        fmt: str = "mp4",
        fps: int = 30,
    ):
        if not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 1:
            raise UserError(f"video_episodes={episodes} is not allowed; expected an integer > 0")
        if fmt not in FORMATS:
            raise UserError(f"video_format={fmt} is not allowed; use {' or '.join(FORMATS)}")
        if not isinstance(fps, int) or isinstance(fps, bool) or fps < 1:
            raise UserError(f"video_fps={fps} is not allowed; expected an integer > 0")
        self.task_names = list(task_names)
        self.episodes = episodes
        self.directory = None if directory is None else Path(directory)
        self.fmt, self.fps = fmt, fps
        k = len(self.task_names)
        self.frames: list[list[np.ndarray]] = [[] for _ in range(k)]  # kept frames (no directory, or GIF)
        self.frame_counts = np.zeros(k, dtype=np.int64)
        self.writers: dict[int, Any] = {}
        self.finished = np.zeros(k, dtype=np.int64)  # recorded episodes per slot
        self.t = np.zeros(k, dtype=np.int64)  # step within the current episode
        self.flag = np.zeros(k, dtype=bool)  # success flag of the last step
        self.succeeded = np.zeros(k, dtype=bool)  # episode success so far

    def active(self) -> list[int]:
        """Slots that still need frames."""
        return [int(i) for i in np.flatnonzero(self.finished < self.episodes)]

    def path(self, slot: int) -> Path:
        assert self.directory is not None
        return self.directory / f"{self.task_names[slot]}.{self.fmt}"

    def before_step(self, env: MultiTaskVectorEnv) -> None:
        slots = self.active()
        if not slots:
            return
        for slot, frame in zip(slots, render_slots(env, slots)):
            frame = annotate(
                frame,
                self.task_names[slot],
                int(self.finished[slot]),
                int(self.t[slot]),
                bool(self.flag[slot]),
                bool(self.succeeded[slot]),
            )
            self.frame_counts[slot] += 1
            if self.directory is not None and self.fmt == "mp4":
                if slot not in self.writers:
                    self.directory.mkdir(parents=True, exist_ok=True)
                    self.writers[slot] = mp4_writer(self.path(slot), self.fps)
                self.writers[slot].append_data(frame)
            else:
                self.frames[slot].append(frame)

    def after_step(self, step: StepResult) -> None:
        done = np.asarray(step.terminated) | np.asarray(step.truncated)
        for slot in self.active():
            self.flag[slot] = bool(step.success[slot])
            self.succeeded[slot] |= self.flag[slot]
            self.t[slot] += 1
            if done[slot]:
                self.finished[slot] += 1
                self.t[slot] = 0
                self.flag[slot] = self.succeeded[slot] = False

    def finish(self) -> list[Path]:
        """Close the MP4 files (or write the GIFs); the paths of the videos, in task order."""
        paths = []
        for slot in range(len(self.task_names)):
            if slot in self.writers:
                self.writers.pop(slot).close()
                paths.append(self.path(slot))
            elif self.directory is not None and self.frames[slot]:
                self.directory.mkdir(parents=True, exist_ok=True)
                paths.append(write_video(self.path(slot), self.frames[slot], self.fps))
                self.frames[slot] = []
        return paths


def render_slots(env: MultiTaskVectorEnv, slots: Sequence[int]) -> list[np.ndarray]:
    """RGB frames of the given slots (only those slots are rendered when the vector env is synchronous)."""
    vector_env = env.vector_env
    try:
        if hasattr(vector_env, "envs"):  # SyncVectorEnv
            frames = [vector_env.envs[i].render() for i in slots]
        else:
            every = vector_env.call("render")
            frames = [every[i] for i in slots]
    except Exception as err:  # mujoco.FatalError and friends when no GL context can be made
        raise RenderingUnavailable(
            f"cannot render MuJoCo frames ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); {rendering_hint()}"
        ) from None
    if any(frame is None for frame in frames):
        raise UserError("the evaluation env renders no frames; build it with render_mode='rgb_array'")
    return [np.asarray(frame, dtype=np.uint8) for frame in frames]


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def annotate(frame: np.ndarray, task: str, episode: int, t: int, flag: bool, succeeded: bool) -> np.ndarray:
    """The frame with a green (success flag 1) or red (0) border and a caption box."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(np.ascontiguousarray(frame[..., :3]))
    draw = ImageDraw.Draw(image)
    width, height = image.size
    colour = GREEN if flag else RED
    draw.rectangle([0, 0, width - 1, height - 1], outline=colour, width=BORDER)
    font = _font(max(10, height // 30))
    text = f"{task}  ep {episode + 1}  t={t}\nsuccess flag {int(flag)}  episode {'SUCCESS' if succeeded else '-'}"
    left, top, right, bottom = draw.multiline_textbbox((BORDER + 4, BORDER + 4), text, font=font)
    draw.rectangle([left - 3, top - 3, right + 3, bottom + 3], fill=(0, 0, 0))
    draw.multiline_text((BORDER + 4, BORDER + 4), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def mp4_writer(path: Path, fps: int = 30) -> Any:
    """An imageio writer of H.264 MP4 (yuv420p, plays everywhere) using imageio-ffmpeg's ffmpeg binary."""
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (the ffmpeg binary imageio uses)
    except ImportError:
        raise UserError(
            "MP4 videos need imageio and imageio-ffmpeg (pip install -e '.[video]'); or use video_format=gif"
        ) from None
    return imageio.get_writer(
        str(path),
        format="FFMPEG",
        mode="I",
        fps=fps,
        codec="libx264",
        pixelformat="yuv420p",
        macro_block_size=16,
        quality=7,
    )


def write_video(path: Path, frames: Sequence[np.ndarray], fps: int = 30) -> Path:
    """Write frames as an H.264 MP4 or an animated GIF (PIL), by the file's suffix."""
    path = Path(path)
    if path.suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0)
        return path
    if path.suffix != ".mp4":
        raise UserError(f"video file '{path}' must end in .mp4 or .gif")
    writer = mp4_writer(path, fps)
    try:
        for frame in frames:
            writer.append_data(frame)
    finally:
        writer.close()
    return path


def recorder_from_config(config: VideoConfig, task_names: Sequence[str], output: Path) -> VideoRecorder | None:
    """A recorder writing to `config.directory` (default `<output stem>_videos`) when `record=true`, else None."""
    if not config.record:
        return None
    return VideoRecorder(task_names, config.episodes, video_dir(config, output), config.format, config.fps)


def video_dir(config: VideoConfig, output: Path) -> Path:
    """`video_dir`, else `<output stem>_videos` beside the evaluation JSON."""
    return Path(config.directory) if config.directory else Path(output).with_name(f"{Path(output).stem}_videos")


__all__ = [
    "VideoRecorder",
    "RenderingUnavailable",
    "annotate",
    "write_video",
    "mp4_writer",
    "recorder_from_config",
    "video_dir",
    "render_slots",
]
