"""Event-time windows: durations, bucket resolution and the exact window semantics.

A window of length ``w`` with delay ``d`` seen from an event at time ``t`` (epoch milliseconds)
holds the entity's events whose time falls in ``(t - d - w, t - d]``. Time is quantised to the
window's *resolution* ``r`` (the width of one time bucket): an event at time ``x`` lives in bucket
``x // r``, and the window of an event in bucket ``b`` is the buckets ``(b - d/r - w/r, b - d/r]``.
At ``r = 1s`` that is exactly ``(t - w, t]`` on a one-second clock; coarser resolutions keep the
state of long windows small (``w / r`` buckets at most) at the price of coarser window edges.

Unless a definition names its resolution, the coarsest "round" width that still cuts the window
into at least 60 buckets is used, so the edges are exact to within 1/60 of the window:

>>> [format_duration(default_resolution(parse_duration(w))) for w in ("1m", "5m", "1h", "24h", "7d")]
['1s', '5s', '1m', '15m', '2h']
>>> w = Window.of("1h")          # 60 buckets of 1 minute
>>> w.contains(t=3_600_000, x=60_000), w.contains(t=3_600_000, x=59_999)
(True, False)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from features.exceptions import FeatureConfigError

__all__ = [
    "LIFETIME",
    "MAX_BUCKETS",
    "Window",
    "default_resolution",
    "format_duration",
    "parse_duration",
]

LIFETIME = "lifetime"
#: Upper bound on buckets per window, so state stays bounded whatever resolution is asked for.
MAX_BUCKETS = 10_000
_MIN_BUCKETS = 60

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"\s*(\d+)\s*(ms|s|m|h|d|w)\s*")
# Bucket widths the default resolution picks from (each divides the next "round" windows).
_ROUND_WIDTHS = tuple(
    n * _UNITS[u] for n, u in (
        (1, "s"), (5, "s"), (10, "s"), (15, "s"), (30, "s"), (1, "m"), (5, "m"), (10, "m"),
        (15, "m"), (30, "m"), (1, "h"), (2, "h"), (3, "h"), (6, "h"), (12, "h"), (1, "d")))


def parse_duration(text: str | int, what: str = "duration") -> int:
    """Milliseconds from ``"90s"``, ``"1h30m"``, ``"7d"`` or an integer number of milliseconds.

    >>> parse_duration("1h30m"), parse_duration("250ms"), parse_duration(0)
    (5400000, 250, 0)
    """
    if isinstance(text, bool):
        raise FeatureConfigError(f"{what}: expected a duration like '5m', got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise FeatureConfigError(f"{what}: must not be negative, got {text}")
        return text
    if not isinstance(text, str) or not text.strip():
        raise FeatureConfigError(f"{what}: expected a duration like '5m', got {text!r}")
    pos, total = 0, 0
    while pos < len(text):
        match = _DURATION.match(text, pos)
        if match is None:
            raise FeatureConfigError(f"{what}: cannot read {text!r} as a duration "
                                     "(use e.g. '30s', '5m', '1h', '7d', '1h30m')")
        total += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total


def format_duration(ms: int) -> str:
    """The shortest unit spelling of ``ms`` (used in feature names).

    >>> format_duration(86_400_000), format_duration(7 * 86_400_000), format_duration(90_000)
    ('24h', '7d', '90s')
    """
    if ms == 0:
        return "0s"
    for unit in ("d", "h", "m", "s"):
        if unit == "d" and ms < 2 * _UNITS["d"]:
            continue  # "24h" reads better than "1d" in feature names
        if ms % _UNITS[unit] == 0:
            return f"{ms // _UNITS[unit]}{unit}"
    return f"{ms}ms"


def default_resolution(window_ms: int) -> int:
    """The coarsest round bucket width dividing ``window_ms`` into at least 60 buckets."""
    best = 0
    for width in _ROUND_WIDTHS:
        if window_ms % width == 0 and window_ms // width >= _MIN_BUCKETS:
            best = width
    if best:
        return best
    for width in (1000, 1):  # short or odd windows: whole seconds if possible, else milliseconds
        if window_ms % width == 0 and window_ms // width <= MAX_BUCKETS:
            return width
    raise FeatureConfigError(f"window {window_ms} ms: give an explicit resolution that divides it")


@dataclass(frozen=True, slots=True)
class Window:
    """A sliding event-time window ``(t - delay - length, t - delay]`` at ``resolution``.

    ``length_ms == 0`` means *lifetime*: every event folded so far, in processing order.
    """

    length_ms: int
    delay_ms: int = 0
    resolution_ms: int = 0

    @classmethod
    def of(cls, length: str | int, delay: str | int = 0,
           resolution: str | int | None = None) -> "Window":
        """Build and validate a window from duration strings (``"1h"``) or milliseconds."""
        if length == LIFETIME:
            if delay not in (0, "0s", "0", None):
                raise FeatureConfigError("a lifetime window cannot be delayed")
            return cls(0, 0, 0)
        length_ms = parse_duration(length, "window")
        if length_ms <= 0:
            raise FeatureConfigError("window: must be positive (or 'lifetime')")
        delay_ms = parse_duration(delay or 0, "delay")
        res = (parse_duration(resolution, "resolution") if resolution is not None
               else default_resolution(length_ms))
        if res <= 0:
            raise FeatureConfigError("resolution: must be positive")
        if length_ms % res:
            raise FeatureConfigError(f"resolution {format_duration(res)} does not divide window "
                                     f"{format_duration(length_ms)}")
        if delay_ms % res:
            raise FeatureConfigError(f"delay {format_duration(delay_ms)} is not a multiple of the "
                                     f"resolution {format_duration(res)}")
        if length_ms // res > MAX_BUCKETS:
            raise FeatureConfigError(f"window {format_duration(length_ms)} at resolution "
                                     f"{format_duration(res)} needs more than {MAX_BUCKETS} buckets")
        return cls(length_ms, delay_ms, res)

    @property
    def lifetime(self) -> bool:
        return self.length_ms == 0

    @property
    def buckets(self) -> int:
        """``n``: how many buckets the window spans."""
        return self.length_ms // self.resolution_ms if self.resolution_ms else 0

    @property
    def delay_buckets(self) -> int:
        return self.delay_ms // self.resolution_ms if self.resolution_ms else 0

    @property
    def label(self) -> str:
        """The suffix used in feature names: ``1h``, ``30d_delay7d``, ``lifetime``."""
        if self.lifetime:
            return LIFETIME
        text = format_duration(self.length_ms)
        return f"{text}_delay{format_duration(self.delay_ms)}" if self.delay_ms else text

    def contains(self, *, t: int, x: int) -> bool:
        """Whether an event at ``x`` is inside this window as seen from an event at ``t``.

        This is the reference definition the incremental state is tested against.
        """
        if self.lifetime:
            return True
        r = self.resolution_ms
        b, bx = t // r, x // r
        return b - self.delay_buckets - self.buckets < bx <= b - self.delay_buckets
