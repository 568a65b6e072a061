"""Commands to an OPC UA variable: the node's own DataType decides the Variant written.

OPC UA servers refuse a value of the wrong built-in type (``BadTypeMismatch``): an Int32
variable does not take a Double 5.0. So the DataType attribute is read once per point (with the
old value, in the same Read request), mapped to its built-in type (an enumeration is an Int32, a
subtype takes its base type) and the JSON value converted to exactly that type.

Pure functions here; the requests are in ``OpcUaSource.write``.
"""

from __future__ import annotations

import math
import struct
import sys

from asyncua import Client, ua
from asyncua.common.ua_utils import data_type_to_variant_type

from gateway.errors import CommandError
from gateway.model import Scalar, Value

VT = ua.VariantType
INTEGER_RANGES = {
    VT.SByte: (-(2**7), 2**7 - 1),
    VT.Byte: (0, 2**8 - 1),
    VT.Int16: (-(2**15), 2**15 - 1),
    VT.UInt16: (0, 2**16 - 1),
    VT.Int32: (-(2**31), 2**31 - 1),
    VT.UInt32: (0, 2**32 - 1),
    VT.Int64: (-(2**63), 2**63 - 1),
    VT.UInt64: (0, 2**64 - 1),
}
FLOAT_MAX = 3.4028234663852886e38
FLOAT64_MAX = sys.float_info.max  # a JSON integer may be larger still


async def variant_type(client: Client, data_type: ua.NodeId) -> ua.VariantType:
    """The built-in type that carries values of ``data_type`` (a DataType node id)."""
    number = data_type.Identifier
    if data_type.NamespaceIndex == 0 and isinstance(number, int) and 1 <= number <= 25:
        return VT(number)
    return await data_type_to_variant_type(client.get_node(data_type))


def to_variant(value: Scalar, vtype: ua.VariantType) -> ua.Variant:
    """The Variant of ``vtype`` holding ``value``, or ``CommandError`` saying why not."""
    if vtype == VT.Boolean:
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return ua.Variant(bool(value), vtype)
        raise CommandError("expected true or false")
    if vtype in INTEGER_RANGES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CommandError("expected a number")
        if isinstance(value, float) and not value.is_integer():
            raise CommandError(f"expected an integer ({vtype.name})")
        low, high = INTEGER_RANGES[vtype]
        if not low <= value <= high:
            raise CommandError(f"out of range for {vtype.name} [{low}, {high}]")
        return ua.Variant(int(value), vtype)
    if vtype in (VT.Float, VT.Double):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CommandError("expected a number")
        limit = FLOAT_MAX if vtype == VT.Float else math.inf
        if abs(value) > FLOAT64_MAX or not math.isfinite(value) or abs(value) > limit:
            raise CommandError(f"out of range for {vtype.name}")
        return ua.Variant(float(value), vtype)
    if vtype == VT.String:
        if not isinstance(value, str):
            raise CommandError("expected a string")
        return ua.Variant(value, vtype)
    if vtype == VT.LocalizedText:
        if not isinstance(value, str):
            raise CommandError("expected a string")
        return ua.Variant(ua.LocalizedText(value), vtype)
    raise CommandError(f"data type {vtype.name} cannot be written from a JSON value")


def expected_value(variant: ua.Variant) -> Value:
    """What reading the variable back should give, as the reading's value."""
    value = variant.Value
    if variant.VariantType == VT.Float:
        return float(struct.unpack(">f", struct.pack(">f", value))[0])
    if isinstance(value, ua.LocalizedText):
        return value.Text or ""
    assert isinstance(value, bool | int | float | str)
    return value
