"""Write the small sample inputs the example workflows use (resources/samples/), from training.data.

    .venv/bin/python -m training.make_samples

- yellow_triangle.png: the first frame of "a yellow triangle moving right on a navy background"
  (64x64), for image_to_video.json.
- white_circle_a.mp4 / white_circle_b.mp4: frames 0-16 and 25-41 of one 42-frame clip of "a white
  circle moving right on a gray background" (64x64, 8 fps); extend_video.json and
  video_to_video.json use clip a, connect_videos.json joins a to b across the 8 missing frames.
Deterministic: the same files every run (PNG exactly; MP4 up to the encoder's version).
"""

from __future__ import annotations

import dataclasses

import torch

from engine.media import write_png, write_video
from engine.values import Video
from training.common import REPO
from training.data import FPS, ClipSpec, render

SAMPLES = REPO / "resources" / "samples"
IMAGE_SPEC = ClipSpec("yellow", "triangle", "moving right", "navy", 64, 64, 17, 10.0, 18.0, 30.0, 1.7)
LONG_SPEC = ClipSpec("white", "circle", "moving right", "gray", 64, 64, 42, 8.0, 11.0, 32.0, 1.0)


def main() -> None:
    SAMPLES.mkdir(parents=True, exist_ok=True)
    write_png(SAMPLES / "yellow_triangle.png", render(dataclasses.replace(IMAGE_SPEC, frames=1))[0])
    frames = torch.from_numpy(render(LONG_SPEC))
    write_video(SAMPLES / "white_circle_a.mp4", Video(frames=frames[:17], fps=FPS), crf=8)
    write_video(SAMPLES / "white_circle_b.mp4", Video(frames=frames[25:], fps=FPS), crf=8)
    for p in sorted(SAMPLES.iterdir()):
        print(p, p.stat().st_size)


if __name__ == "__main__":
    main()
