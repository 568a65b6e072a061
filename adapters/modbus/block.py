"""One read request's answer -> values, decoded as a whole block. Built once per request.

Most register maps are plain numbers in the Modbus default order. A request whose points are all
such numbers (``int16`` ... ``float64``, big-endian bytes and words, no ``bit``, no ``enum``, no
overlap) is decoded by one ``struct`` format precompiled for the whole answer, gaps skipped as pad
bytes: one C call for up to 125 registers instead of a slice, a reorder and an unpack per point.
Its values leave as one ``Block`` (no ``Reading`` object per value). Any other request is decoded
point by point by the points' codecs, into readings, exactly as before.

A block whose answer is byte for byte the previous one (a machine at rest) reuses the previous
values: nothing is decoded again.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from adapters.modbus.config import BIT_TABLES
from adapters.modbus.decode import Float32s, PointCodec
from adapters.modbus.plan import ReadRequest
from gateway.model import GOOD, Block, Points, Reading, Sample, Value

FAST_FORMATS = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}


class RequestDecoder:
    """Decodes the answers to one ``ReadRequest`` of one device."""

    __slots__ = (
        "_float32s",
        "_floating",
        "_floats",
        "_scaled",
        "_struct",
        "codecs",
        "device_id",
        "fast",
        "interval",
        "last_block",
        "last_raw",
        "last_ts",
        "last_values",
        "points",
        "request",
        "stale",
    )

    def __init__(
        self, device_id: str, request: ReadRequest, interval: float, codecs: dict[str, PointCodec]
    ) -> None:
        self.device_id = device_id
        self.request = request
        self.interval = interval
        self.codecs = [codecs[s.point.name] for s in request.slots]
        self.points = Points(
            tuple(s.point.name for s in request.slots), tuple(s.point.unit for s in request.slots)
        )
        self._struct = _block_format(request, self.codecs)
        self.fast = self._struct is not None
        self._floats = [i for i, c in enumerate(self.codecs) if c.data_type == "float32"]
        self._float32s = Float32s(len(self._floats))
        self._scaled = [(i, c.scaling) for i, c in enumerate(self.codecs) if not c.scaling.identity]
        # A float may be NaN or infinite: such an answer takes the per-point path (bad readings).
        self._floating = bool(self._scaled) or any(
            c.data_type in ("float32", "float64") for c in self.codecs
        )
        # The last good block (fast requests): reused for an identical answer, and the source
        # of ``stale`` readings when the device stops answering in time.
        self.last_raw = b""
        self.last_block: list[int | float] = []
        # The values of the last answer (None where a point was not good), and when it came.
        self.last_values: Sequence[Value | None] = ()
        self.last_ts: float | None = None
        self.stale = False

    def decode(self, raw: bytes, ts: float, out: list[Sample]) -> None:
        """Append this answer's samples to ``out``: one block, or one reading per point."""
        if self._struct is None:
            self._decode_points(raw, ts, out)
            return
        if raw == self.last_raw:
            values = self.last_block
        else:
            values = list(self._struct.unpack_from(raw))
            if self._floats:
                self._float32s.apply(values, self._floats)
            for i, scaling in self._scaled:
                values[i] = scaling.apply(values[i])
            if self._floating and not math.isfinite(sum(values)):  # one C loop, no per-value test
                self._decode_points(raw, ts, out)
                return
            self.last_raw, self.last_block = raw, values
        self.last_values = values
        self.last_ts = ts
        self.stale = False
        out.append(Block(self.device_id, self.points, values, ts))

    def decode_bits(self, bits: list[bool], ts: float, out: list[Sample]) -> None:
        """A coil or discrete-input answer: one reading per point."""
        start, device_id = self.request.start, self.device_id
        values = [bits[slot.address - start] for slot in self.request.slots]
        for name, unit, value in zip(self.points.names, self.points.units, values, strict=True):
            out.append(Reading(device_id, name, value, GOOD, ts, unit))
        self.last_values, self.last_ts, self.stale = values, ts, False

    def forget(self) -> None:
        """The request failed: its last values must not come back later as ``stale``."""
        self.last_raw, self.last_block, self.last_values, self.last_ts = b"", [], (), None

    def _decode_points(self, raw: bytes, ts: float, out: list[Sample]) -> None:
        request, device_id = self.request, self.device_id
        start = request.start
        good: list[Value | None] = []
        for slot, codec in zip(request.slots, self.codecs, strict=True):
            point = slot.point
            offset = 2 * (slot.address - start)
            value, quality, reason = codec.decode(raw[offset : offset + 2 * slot.width])
            out.append(Reading(device_id, point.name, value, quality, ts, point.unit, reason))
            good.append(value if quality == GOOD else None)
        self.last_values, self.last_ts, self.stale = good, ts, False


def _block_format(request: ReadRequest, codecs: list[PointCodec]) -> struct.Struct | None:
    """The struct reading every point of the request at once, or None when one cannot."""
    if request.table in BIT_TABLES:
        return None
    parts = [">"]
    position = request.start
    for slot, codec in zip(request.slots, codecs, strict=True):
        code = FAST_FORMATS.get(codec.data_type)
        plain_order = codec.byte_order == "big" and (codec.word_order == "big" or slot.width == 1)
        if (
            code is None
            or codec.bit is not None
            or codec.enum is not None
            or not plain_order
            or slot.address < position  # overlapping points
        ):
            return None
        if slot.address > position:
            parts.append(f"{2 * (slot.address - position)}x")
        parts.append(code)
        position = slot.address + slot.width
    return struct.Struct("".join(parts))
