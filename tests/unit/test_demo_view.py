"""The demo's Sparkplug table: names and units from DBIRTH, DDATA by alias, deaths shown."""

from __future__ import annotations

from gateway.delivery.sparkplug import sparkplug_b_pb2 as pb
from gateway.delivery.sparkplug.payload import QUALITY_BAD
from gateway.demo import LiveTable, SparkplugView, with_format
from gateway.registry import load_config
from tests.helpers import ROOT

NODE = "spBv1.0/plant-1/{}/edge-01"


def _view() -> tuple[LiveTable, SparkplugView]:
    config = with_format(load_config([ROOT / "configs" / "demo.yaml"]), "sparkplug")
    table = LiveTable(config)
    return table, SparkplugView(table, config)


def _payload(seq: int, *metrics: dict[str, object]) -> bytes:
    payload = pb.Payload(seq=seq)
    for fields in metrics:
        quality = fields.pop("quality", None)
        unit = fields.pop("unit", None)
        metric = payload.metrics.add(**fields)  # type: ignore[arg-type]
        if unit is not None:
            metric.properties.keys.append("engUnit")
            metric.properties.values.add(type=pb.String, string_value=unit)
        if quality is not None:
            metric.properties.keys.append("Quality")
            metric.properties.values.add(type=pb.Int32, int_value=quality & 0xFFFFFFFF)
    return payload.SerializeToString()


def test_the_demo_map_in_sparkplug_mode_takes_its_site_as_group() -> None:
    _, view = _view()
    assert view.topic == "spBv1.0/plant-1/+/edge-01/#"


def test_data_by_alias_resolves_through_the_birth_and_deaths_make_rows_bad() -> None:
    table, view = _view()
    view.on_message(NODE.format("NBIRTH"), _payload(0, {"name": "bdSeq", "long_value": 3}))
    birth = _payload(
        1,
        {"name": "zone1_temp", "alias": 7, "datatype": pb.Float, "float_value": 180.5,
         "unit": "degC"},
        {"name": "fan_speed", "alias": 9, "datatype": pb.Int32, "int_value": 0,
         "quality": QUALITY_BAD},
    )  # fmt: skip
    view.on_message(NODE.format("DBIRTH") + "/oven-01", birth)
    assert table.latest[("oven-01", "fan_speed")].quality == "bad"
    # Int32 -5 in two's complement; absent Quality is good.
    view.on_message(
        NODE.format("DDATA") + "/oven-01",
        _payload(2, {"alias": 9, "int_value": 0xFFFFFFFB}, {"alias": 7, "float_value": 181.0}),
    )
    fan, zone = table.latest[("oven-01", "fan_speed")], table.latest[("oven-01", "zone1_temp")]
    assert (fan.value, fan.quality) == (-5, "good")
    assert (zone.value, zone.unit, zone.quality) == (181.0, "degC", "good")
    # A value from the backlog is history: the table keeps the current one.
    view.on_message(
        NODE.format("DDATA") + "/oven-01",
        _payload(3, {"alias": 7, "float_value": 170.0, "is_historical": True}),
    )
    assert table.latest[("oven-01", "zone1_temp")].value == 181.0
    view.on_message(NODE.format("DDEATH") + "/oven-01", _payload(5))  # seq 4 was lost
    assert table.latest[("oven-01", "zone1_temp")].quality == "bad: device offline (DDEATH)"
    assert table.latest[("oven-01", "zone1_temp")].value == 181.0  # the last value, stale
    assert view.summary().startswith("Sparkplug B edge node edge-01, bdSeq 3: ")
    assert view.summary().endswith(", 1 seq gaps")
    view.on_message(NODE.format("NDEATH"), _payload(0, {"name": "bdSeq", "long_value": 3}))
    assert table.latest[("oven-01", "fan_speed")].quality == "bad: edge node offline (NDEATH)"
