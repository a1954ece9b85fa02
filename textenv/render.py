"""Rendering textenv's envs: :class:`TextRendering` (every render mode) and ``render_mode="rgb_array"``, an
episode's text drawn into an RGB image.

Every frame of an environment has the same size, ``(FRAME_HEIGHT, FRAME_WIDTH, 3)`` uint8, as video recorders
(Gymnasium's ``RecordVideo``, SB3's ``VecVideoRecorder``) need. The text is word-wrapped to the frame's width;
when it needs more lines than fit, the last lines are shown, so the newest tokens are always in view. The font
is Pillow's built-in default (no font files needed).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

FRAME_WIDTH = 512
FRAME_HEIGHT = 256
MARGIN = 8
FONT_SIZE = 14
BACKGROUND = (255, 255, 255)
FOREGROUND = (20, 20, 20)


@functools.lru_cache(maxsize=1)
def _font() -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=FONT_SIZE)  # Pillow's bundled FreeType font
    except ImportError:  # Pillow built without FreeType: its fixed-size bitmap font
        return ImageFont.load_default()


def _safe_text(font: Any, text: str) -> str:
    """``text`` with the characters the font cannot encode replaced by ``?`` (Pillow's bitmap fallback font is
    latin-1 only; its FreeType default font draws any character)."""
    try:
        font.getbbox(text)
        return text
    except UnicodeEncodeError:
        return text.encode("latin-1", "replace").decode("latin-1")


def wrap(text: str, width: float, measure: Any) -> list[str]:
    """Greedy word wrap: lines whose ``measure(line)`` is at most ``width`` (a longer word is split)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if measure(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while measure(word) > width and len(word) > 1:  # a word wider than the frame: split it
                cut = len(word) - 1
                while cut > 1 and measure(word[:cut]) > width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


class TextFrames:
    """Draws text into fixed-size RGB frames (see the module docstring)."""

    def __init__(self, width: int = FRAME_WIDTH, height: int = FRAME_HEIGHT) -> None:
        self.width, self.height = int(width), int(height)
        left, top, right, bottom = _font().getbbox("Ag")
        self.line_height = int(bottom - top) + 4
        self.max_lines = max(1, (self.height - 2 * MARGIN) // self.line_height)

    def draw(self, text: str) -> np.ndarray:
        """``text`` word-wrapped into a ``(height, width, 3)`` uint8 array; the last lines if it is too long."""
        from PIL import Image, ImageDraw

        font = _font()  # cached per process, not kept on the object: TextFrames pickles with its env
        text = _safe_text(font, text)
        lines = wrap(text, self.width - 2 * MARGIN, font.getlength)[-self.max_lines :]
        image = Image.new("RGB", (self.width, self.height), BACKGROUND)
        canvas = ImageDraw.Draw(image)
        for i, line in enumerate(lines):
            canvas.text((MARGIN, MARGIN + i * self.line_height), line, fill=FOREGROUND, font=font)
        return np.asarray(image, dtype=np.uint8)


class TextRendering:
    """``render_mode`` handling shared by textenv's envs, whose episodes are text: a mix-in for a ``gym.Env`` or
    ``VectorEnv`` with ``metadata["render_modes"]``. ``"ansi"``: the text; ``"human"``: printed; ``"rgb_array"``:
    drawn by :class:`TextFrames`."""

    render_mode: str | None
    metadata: dict[str, Any]
    _frames: TextFrames | None = None

    def _set_render_mode(self, render_mode: str | None) -> None:
        modes = self.metadata["render_modes"]
        if render_mode is not None and render_mode not in modes:
            raise ValueError(f"render_mode={render_mode!r}; expected None or one of {modes}")
        self.render_mode = render_mode

    def _render_texts(self, texts: Sequence[str]) -> list[str | np.ndarray] | None:
        """One entry per text for ``"ansi"`` and ``"rgb_array"``; ``None`` for ``"human"`` (printed) and no mode."""
        if self.render_mode is None:
            return None
        if self.render_mode == "human":
            for text in texts:
                print(text)
            return None
        if self.render_mode == "rgb_array":
            if self._frames is None:
                self._frames = TextFrames()
            return [self._frames.draw(text) for text in texts]
        return list(texts)

    def _render_one(self, text: str) -> str | np.ndarray | None:
        """:meth:`_render_texts` for a single env, warning (as Gymnasium envs do) when there is no render mode."""
        if self.render_mode is None:
            gym.logger.warn(
                f"render() called without a render_mode; pass render_mode= one of {self.metadata['render_modes']}"
            )
        rendered = self._render_texts([text])
        return None if rendered is None else rendered[0]
