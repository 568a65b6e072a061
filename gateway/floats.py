"""Float32 values as people write them: the shortest decimal that is the same float32
(a PLC's 0.1 publishes as 0.1, not 0.10000000149011612). Shared by the protocols that read
float32 (Modbus, S7)."""

from __future__ import annotations

import struct

_pack_f32 = struct.Struct(">f").pack


_MIN_NORMAL_F32 = 1.1754943508222875e-38  # below it a float32 has fewer than 24 bits


def shortest_float32(value: float) -> float:
    """The shortest decimal giving the same float32: 0.1f publishes as 0.1, not 0.10000000149.

    Every float32 of every poll goes through here (or through ``Float32s``, for a block):
    ``%g`` drops trailing zeros (12.3f gives ``12.3``), 7 significant digits give back about
    40 % of float32 values, 8 most of the rest, and 9 always round-trip a float32.
    """
    candidate = float("%.7g" % value)  # noqa: UP031 -- %-formatting is the fastest here
    if candidate == value:
        return candidate
    packed = _pack_f32(value)
    if abs(value) < _MIN_NORMAL_F32:  # subnormal: fewer significant bits, so fewer digits
        return next(
            c
            for c in (float("%.*g" % (d, value)) for d in range(1, 10))  # noqa: UP031
            if _pack_f32(c) == packed
        )
    if _pack_f32(candidate) == packed:
        return candidate
    return _eight_or_nine_digits(value)


def _eight_or_nine_digits(value: float) -> float:
    """A normal float32 that 7 digits do not give back: 8 digits often do, 9 always do."""
    candidate = float("%.8g" % value)  # noqa: UP031
    if _pack_f32(candidate) == _pack_f32(value):
        return candidate
    return float("%.9g" % value)  # noqa: UP031
