"""The quality scale: 0 to 100 for people; a level and a fraction of a level for the network and the file.

A bundle with L levels puts level k at the integer quality round(100 (k - 1) / (L - 1)): for 8
levels 0, 14, 29, 43, 57, 71, 86 and 100. Between two levels the latent gains move in 256ths of a
level (Cui et al. 2021), in proportion to the quality, so every integer quality is its own
position and fractional qualities reach finer ones.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .config import FIRST_USER_ID, SHIPPED_LEVELS
from .container import FRACTION, Header

SCALE = 100


class Position(NamedTuple):
    """A point on the fine scale: the level whose tables code the file, and 256ths towards the next."""

    level: int
    fraction: int = 0

    @property
    def value(self) -> float:
        """The level with its fraction as one number, as the gains see it (4.5: halfway to 5)."""
        return self.level + self.fraction / FRACTION

    @property
    def tables(self) -> int:
        """The level whose entropy tables code it (Header.tables)."""
        return self.level + bool(self.fraction)


def check(quality: object) -> float:
    """A quality as a float, or TypeError/ValueError naming the scale."""
    expected = f"quality must be a number from 0 to {SCALE}"
    if isinstance(quality, bool) or not isinstance(quality, (int, float, np.integer, np.floating)):
        raise TypeError(f"{expected}, not {quality!r} ({type(quality).__name__})")
    if not (math.isfinite(quality) and 0 <= quality <= SCALE):
        raise ValueError(f"{expected}, not {quality}")
    return float(quality)


def anchors(levels: int) -> list[int]:
    """The integer quality of each level, lowest first."""
    if levels == 1:
        return [SCALE]
    return [math.floor(SCALE * k / (levels - 1) + 0.5) for k in range(levels)]


def position(quality: float, levels: int) -> Position:
    """The position of a quality (to the nearest 256th of a level; halves round up on every machine)."""
    quality = check(quality)
    marks = anchors(levels)
    if levels == 1 or quality >= marks[-1]:
        return Position(levels)
    k = max(i for i, mark in enumerate(marks) if mark <= quality)
    fraction = math.floor((quality - marks[k]) / (marks[k + 1] - marks[k]) * FRACTION + 0.5)
    return Position(k + 2, 0) if fraction == FRACTION else Position(k + 1, fraction)


def of_position(level: int, fraction: int, levels: int) -> float:
    """The quality that names a position exactly."""
    marks = anchors(levels)
    if level >= levels:
        return float(marks[-1])
    return marks[level - 1] + (marks[level] - marks[level - 1]) * fraction / FRACTION


def of_level(level: float, levels: int) -> float:
    """The quality of a level, whole or fractional (Position.value)."""
    whole = int(level)
    return of_position(whole, round((level - whole) * FRACTION), levels)


def describe(level: int, fraction: int, levels: int | None) -> str:
    """A quality for people: "71 (level 6)", "21.5 (level 2.5)"; the level alone when the bundle's
    level count is unknown."""
    where = f"level {round(level + fraction / FRACTION, 2):g}"
    if levels is None:
        return where
    return f"{round(of_position(level, fraction, levels), 1):g} ({where})"


def shipped_levels(weights_id: int) -> int | None:
    """The level count of a shipped bundle's id (all have SHIPPED_LEVELS); None for a user's."""
    return SHIPPED_LEVELS if weights_id < FIRST_USER_ID else None


def of_header(header: Header, levels: int | None = None) -> float | None:
    """A file's quality on the 0-100 scale, where its bundle's level count is known."""
    levels = levels or shipped_levels(header.weights_id)
    return None if levels is None else round(of_position(header.level, header.fraction, levels), 1)
