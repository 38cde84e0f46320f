"""User controls over the F0 track: automatic key, autotune to a scale, and F0 curves.

All of them act on F0 in Hz at 100 frames/s (10 ms, the pitch track's rate); unvoiced
frames (0 Hz) stay 0. They are off by default, so a conversion with default options is
the reference's, sample for sample. Order inside `estimate_pitch`: the automatic key is
measured on the estimated F0, the key shift applies, autotune snaps the shifted F0 (so
the output is in tune in the key the user named), and an F0 curve replaces the final
values over its time range (what `POST /pitch` returns can be edited and sent back).

Sources of the rules: Applio's `proposal_f0_up_key` (automatic key, 155 Hz male and
255 Hz female targets, limit +/-12) and `autotune_f0` (f + (note - f) * strength);
the RVC WebUI's F0 file input (CSV of time_s,f0_hz that replaces the estimated F0).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import OptionError
from .base import F0_MAX, F0_MIN

#: Median F0 targets of `auto_key` by name, Hz (Applio's "proposed pitch" thresholds).
AUTO_KEY_TARGETS_HZ = {"male": 155.0, "female": 255.0}
#: `auto_key` never shifts further than this many semitones either way (Applio).
AUTO_KEY_LIMIT = 12
#: Equal temperament reference: MIDI note 69 is A4 = 440 Hz.
A4_HZ, A4_MIDI = 440.0, 69
#: Frames per second of the F0 track (10 ms hop at 16 kHz).
F0_FRAME_RATE = 100

_NOTE_CLASSES = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
#: Semitone steps above the tonic of each scale autotune knows.
SCALE_INTERVALS: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11),
    "melodic minor": (0, 2, 3, 5, 7, 9, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "locrian": (0, 1, 3, 5, 6, 8, 10),
    "major pentatonic": (0, 2, 4, 7, 9),
    "minor pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
}
CHROMATIC = "chromatic"
_SCALE_TEXT = re.compile(r"([a-g])\s*(#|b|sharp|flat)?\s*[ _-]?\s*(.*)")

#: Largest F0 curve accepted, in characters (about 70 minutes of 10 ms rows).
MAX_F0_CURVE_CHARS = 8 << 20
#: Most rows an F0 curve may have.
MAX_F0_CURVE_ROWS = 500_000


# --- scales and autotune -------------------------------------------------------------------


def scale_pitch_classes(scale: str) -> tuple[int, ...]:
    """Pitch classes (0 = C .. 11 = B) of a scale such as "A minor", "f# major", "chromatic".

    Raises OptionError naming the accepted forms.
    """
    text = " ".join(str(scale).strip().lower().replace("_", " ").split())
    if text in ("", CHROMATIC):
        return tuple(range(12))
    match = _SCALE_TEXT.fullmatch(text)
    mode = match.group(3).strip() if match else ""
    if not match or mode not in SCALE_INTERVALS:
        raise OptionError(
            f"autotune_scale must be 'chromatic' or '<note> <scale>', e.g. 'A minor' or 'F# major'; notes are "
            f"C..B with # or b, scales are {', '.join(SCALE_INTERVALS)}; got {scale!r}")
    tonic = _NOTE_CLASSES[match.group(1)] + {None: 0, "#": 1, "sharp": 1, "b": -1, "flat": -1}[match.group(2)]
    return tuple(sorted((tonic + step) % 12 for step in SCALE_INTERVALS[mode]))


def hz_to_midi(f0: np.ndarray) -> np.ndarray:
    """Fractional MIDI note numbers of positive frequencies in Hz (A4 = 440 Hz = 69)."""
    return A4_MIDI + 12.0 * np.log2(np.asarray(f0, dtype=np.float64) / A4_HZ)


def midi_to_hz(note: np.ndarray) -> np.ndarray:
    """Frequencies in Hz of (fractional) MIDI note numbers."""
    return A4_HZ * 2.0 ** ((np.asarray(note, dtype=np.float64) - A4_MIDI) / 12.0)


def nearest_scale_note(midi: np.ndarray, pitch_classes: tuple[int, ...]) -> np.ndarray:
    """The nearest whole MIDI note whose pitch class is in `pitch_classes` (ties go down)."""
    midi = np.asarray(midi, dtype=np.float64)
    base = np.floor(midi)
    candidates = base[..., None] + np.arange(-6, 8)  # every class appears within a 13-note span
    allowed = np.isin(np.mod(candidates, 12).astype(np.int64), np.asarray(pitch_classes))
    distance = np.where(allowed, np.abs(candidates - midi[..., None]), np.inf)
    return np.take_along_axis(candidates, np.argmin(distance, axis=-1)[..., None], axis=-1)[..., 0]


def autotune(f0: np.ndarray, strength: float, scale: str = CHROMATIC) -> np.ndarray:
    """Pull voiced F0 (Hz, any shape) towards the nearest note of `scale`; float32.

    f' = f + (note - f) * strength: strength 1 snaps to the exact equal-tempered note
    (A4 = 440 Hz), 0 changes nothing. Unvoiced frames (<= 0 Hz) stay as they are.
    """
    f0 = np.asarray(f0, dtype=np.float32)
    if strength == 0:
        return f0.copy()
    voiced = f0 > 0
    out = f0.astype(np.float64)
    target = midi_to_hz(nearest_scale_note(hz_to_midi(out[voiced]), scale_pitch_classes(scale)))
    out[voiced] = out[voiced] + (target - out[voiced]) * float(strength)
    return out.astype(np.float32)


# --- automatic key ----------------------------------------------------------------------------


def auto_key_target_hz(setting: str) -> float | None:
    """The median F0 `auto_key` aims at: "male" 155 Hz, "female" 255 Hz, a number of Hz
    (50 to 1100), or None for "off". Raises OptionError for anything else."""
    text = str(setting).strip().lower()
    if text in ("", "off"):
        return None
    if text in AUTO_KEY_TARGETS_HZ:
        return AUTO_KEY_TARGETS_HZ[text]
    try:
        hz = float(text.removesuffix("hz").strip())
    except ValueError:
        hz = math.nan
    if not (F0_MIN <= hz <= F0_MAX):
        raise OptionError(f"auto_key must be off, male (155 Hz), female (255 Hz) or a target F0 from "
                          f"{F0_MIN:g} to {F0_MAX:g} Hz, got {setting!r}")
    return hz


def median_voiced_f0(f0: np.ndarray) -> float | None:
    """Median of the voiced frames (F0 > 0) in Hz, or None when nothing is voiced."""
    f0 = np.asarray(f0, dtype=np.float64)
    voiced = f0[np.isfinite(f0) & (f0 > 0)]
    return float(np.median(voiced)) if voiced.size else None


def choose_auto_key(f0: np.ndarray, target_hz: float) -> int:
    """Semitones that bring the median voiced F0 to `target_hz`:
    round(12 * log2(target / median)), limited to +/-12; 0 when nothing is voiced."""
    median = median_voiced_f0(f0)
    if median is None:
        return 0
    key = int(np.round(12.0 * math.log2(target_hz / median)))
    return max(-AUTO_KEY_LIMIT, min(AUTO_KEY_LIMIT, key))


# --- F0 curves ------------------------------------------------------------------------------


@dataclass(frozen=True)
class F0Curve:
    """A user's F0 curve: `times_s` ascending (seconds from the start of the input) and
    `f0_hz` (0 = unvoiced) of the same length."""

    times_s: np.ndarray
    f0_hz: np.ndarray

    @classmethod
    def parse(cls, text: str) -> F0Curve:
        """Read CSV rows `time_s,f0_hz` (a header row, blank lines and `#` comments are
        skipped; ';', tab or space also separate). Raises OptionError with the row at fault."""
        if len(text) > MAX_F0_CURVE_CHARS:
            raise OptionError(f"f0_curve has {len(text)} characters; the limit is {MAX_F0_CURVE_CHARS}")
        times: list[float] = []
        values: list[float] = []
        first_row = True
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            may_be_header, first_row = first_row, False
            fields = [f for f in re.split(r"[,;\t ]+", line) if f]
            try:
                if len(fields) != 2:
                    raise ValueError
                t, hz = float(fields[0]), float(fields[1])
            except ValueError:
                if may_be_header and any(c.isalpha() for c in line):
                    continue  # a header such as "time_s,f0_hz"
                raise OptionError(f"f0_curve row {number} must be 'time_s,f0_hz', got {line[:60]!r}") from None
            if not (math.isfinite(t) and math.isfinite(hz)) or t < 0 or hz < 0 or hz > 2 * F0_MAX:
                raise OptionError(f"f0_curve row {number}: time must be >= 0 s and F0 from 0 to "
                                  f"{2 * F0_MAX:g} Hz, got {line[:60]!r}")
            if times and t <= times[-1]:
                raise OptionError(f"f0_curve row {number}: times must increase, got {t:g} s after {times[-1]:g} s")
            times.append(t)
            values.append(hz)
            if len(times) > MAX_F0_CURVE_ROWS:
                raise OptionError(f"f0_curve has more than {MAX_F0_CURVE_ROWS} rows")
        if not times:
            raise OptionError("f0_curve has no rows; send CSV lines 'time_s,f0_hz' (as POST /pitch returns)")
        return cls(np.asarray(times, dtype=np.float64), np.asarray(values, dtype=np.float64))

    def frame_range(self, n_frames: int, offset_frames: int = 0) -> range:
        """Frame indices (of a track whose input time 0 is frame `offset_frames`) whose
        times lie inside the curve's [first, last] time, clipped to the track."""
        first = offset_frames + math.ceil(round(self.times_s[0] * F0_FRAME_RATE, 6))
        last = offset_frames + math.floor(round(self.times_s[-1] * F0_FRAME_RATE, 6))
        return range(max(first, 0), min(last + 1, n_frames))

    def apply(self, f0: np.ndarray, offset_frames: int = 0) -> np.ndarray:
        """`f0` (Hz, 100 frames/s) with the frames inside the curve's time range replaced by
        the curve, linearly interpolated at each frame's time; others unchanged. float32."""
        out = np.array(f0, dtype=np.float32)
        frames = self.frame_range(out.shape[0], offset_frames)
        if len(frames):
            at = (np.arange(frames.start, frames.stop) - offset_frames) / F0_FRAME_RATE
            out[frames.start:frames.stop] = np.interp(at, self.times_s, self.f0_hz)
        return out


def f0_curve_csv(f0: np.ndarray) -> str:
    """CSV `time_s,f0_hz` (with a header) of an F0 track at 100 frames/s that starts at 0 s:
    the format `F0Curve.parse` reads back to the same float32 values."""
    rows = ["time_s,f0_hz"]
    rows += [f"{i / F0_FRAME_RATE:.2f},{float(v):.9g}" for i, v in enumerate(np.asarray(f0, dtype=np.float32))]
    return "\n".join(rows) + "\n"
