"""OPC UA values, status codes and timestamps -> the common model (pure functions)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from asyncua import ua

from adapters.opcua.config import split_browse_path
from adapters.opcua.convert import convert, quality_of, to_value
from adapters.opcua.nodes import parse_node_id, relative_path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, True),
        (-5, -5),
        (12345678901234567890, 12345678901234567890),
        (1.5, 1.5),
        (float("nan"), None),
        (float("inf"), None),
        ("text", "text"),
        (b"hello", "aGVsbG8="),
        (datetime(2026, 1, 2, 3, 4, 5, 678000), "2026-01-02T03:04:05.678Z"),
        (
            datetime(2026, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1))),
            "2026-01-02T03:04:05.000Z",
        ),
        (ua.LocalizedText("Ofen", "de"), "Ofen"),
        (ua.QualifiedName("State", 2), "2:State"),
        (ua.NodeId(ua.String("Oven.T"), ua.Int16(2)), "ns=2;s=Oven.T"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (ua.StatusCode(ua.StatusCodes.BadTimeout), "BadTimeout"),
        ([1, 2, 3], [1, 2, 3]),
        ([b"a", float("nan")], ["YQ==", None]),
        ([[1, 2], [3, 4]], [[1, 2], [3, 4]]),
        (ua.NodeClass.Variable, 2),
        (None, None),
    ],
)
def test_values_map_to_json(raw: object, expected: object) -> None:
    assert to_value(raw) == expected


def test_status_codes_map_to_quality_with_the_status_name() -> None:
    assert quality_of(ua.StatusCode(ua.StatusCodes.Good)) == ("good", None)
    assert quality_of(ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue)) == (
        "uncertain",
        "UncertainLastUsableValue",
    )
    assert quality_of(ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)) == ("bad", "BadNodeIdUnknown")


def test_source_timestamp_then_server_timestamp_then_receive_time() -> None:
    source = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
    server = source + timedelta(seconds=5)
    both = ua.DataValue(ua.Variant(1.0), SourceTimestamp=source, ServerTimestamp=server)  # type: ignore[arg-type]
    assert convert(both, 99.0)[2] == source.timestamp()
    only_server = ua.DataValue(ua.Variant(1.0), ServerTimestamp=server)  # type: ignore[arg-type]
    assert convert(only_server, 99.0)[2] == server.timestamp()
    assert convert(ua.DataValue(ua.Variant(1.0)), 99.0)[2] == 99.0


def test_a_bad_value_carries_no_value() -> None:
    data = ua.DataValue(ua.Variant(3.0), StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure))
    assert convert(data, 1.0) == (None, "bad", 1.0, "BadSensorFailure")


def test_a_nan_or_infinite_value_is_bad_with_its_reason() -> None:
    nan = ua.DataValue(ua.Variant(float("nan")))
    assert convert(nan, 1.0) == (None, "bad", 1.0, "not a number (NaN)")
    inf = ua.DataValue(ua.Variant(float("inf")))
    assert convert(inf, 1.0) == (None, "bad", 1.0, "infinite value (inf)")
    array = ua.DataValue(ua.Variant([1.5, float("nan")]))
    reason = "NaN or infinity in the array (published as null)"
    assert convert(array, 1.0) == ([1.5, None], "uncertain", 1.0, reason)


def test_node_ids_by_index_and_by_namespace_uri() -> None:
    namespaces = ["http://opcfoundation.org/UA/", "urn:server", "http://acme/plant"]
    assert parse_node_id("ns=2;s=Oven.T", namespaces) == ua.NodeId(ua.String("Oven.T"), ua.Int16(2))
    assert parse_node_id("nsu=http://acme/plant;i=1042", namespaces) == ua.NodeId(
        ua.Int32(1042), ua.Int16(2)
    )
    assert parse_node_id("nsu=http://unknown;i=1", namespaces) == "BadNamespaceUnknown"


def test_browse_paths_inherit_the_namespace_of_the_previous_segment() -> None:
    assert split_browse_path("0:Objects/2:Oven/State") == [
        (0, "Objects"),
        (2, "Oven"),
        (2, "State"),
    ]
    assert split_browse_path("Objects/Server") == [(0, "Objects"), (0, "Server")]
    path = relative_path("0:Objects/2:Oven/2:State")
    assert [(e.TargetName.NamespaceIndex, e.TargetName.Name) for e in path.Elements] == [
        (0, "Objects"),
        (2, "Oven"),
        (2, "State"),
    ]
