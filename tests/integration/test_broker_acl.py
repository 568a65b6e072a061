"""The broker's ACLs decide who may command the plant: docs/security.md's mosquitto example,
used as it is, lets the operator write and everyone else only read."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers import ROOT, Collector, Commander, Mosquitto, Process, free_port, wait_port
from tests.integration.line import events
from tests.integration.plant import device, write_map

ACL = ROOT / "configs" / "mosquitto" / "aclfile"
SETPOINT = (
    "\n      - {name: sp, table: holding, address: 0, type: uint16, writable: true, "
    "sim: {constant: 10}}"
)
TOPIC = "acme/plant-1/assembly/line-1/plc-a/sp/set"
STATUS = "acme/plant-1/assembly/_gateway/gw-test/status"
PASSWORDS = {"edge-01": "gw-pass", "operator": "op-pass", "viewer": "view-pass"}


def test_the_example_acl_lets_the_operator_write_and_the_viewer_only_read(
    workdir: Path,
) -> None:
    passwd = workdir / "passwd"
    for user, password in PASSWORDS.items():
        create = ["-c"] if not passwd.exists() else []
        subprocess.run(
            ["mosquitto_passwd", *create, "-b", str(passwd), user, password],
            check=True,
            timeout=30,
        )
    broker = Mosquitto(
        workdir, extra=f"allow_anonymous false\npassword_file {passwd}\nacl_file {ACL}\n"
    )
    # The gateway's password from a secret file, as with Docker secrets.
    (workdir / "broker.secret").write_text(PASSWORDS["edge-01"] + "\n")
    port = free_port()
    path = write_map(
        workdir / "gw.yaml",
        broker.port,
        [device("plc-a", port, SETPOINT)],
        mqtt="username: edge-01\npassword: ${file:broker.secret}",
    )
    sim = Process("simulate", str(path), log=workdir / "sim.log")
    viewer = Collector(broker.port, "acme/#", login=("viewer", PASSWORDS["viewer"]))
    operator = Commander(broker.port, "acme/#", login=("operator", PASSWORDS["operator"]))
    intruder = Commander(broker.port, "acme/#", login=("viewer", PASSWORDS["viewer"]))
    gateway = None
    try:
        wait_port(port)
        gateway = Process("run", str(path), log=workdir / "gw.log")
        # The viewer reads the plant: the setpoint's value arrives.
        viewer.wait_for(lambda r: r["point"] == "sp" and r["value"] == 10, timeout=30)
        assert operator.first_command(TOPIC, '{"value": 11, "id": "op-1"}')["ok"] is True

        # A viewer's command is refused by the broker (MQTT 5: "not authorized"), never
        # reaches the gateway; a forged status is dropped too.
        refused = intruder.client.publish(TOPIC, b'{"value": 99, "id": "intruder"}', qos=1)
        refused.wait_for_publish(10)
        forged = intruder.client.publish(STATUS, b'{"state": "offline"}', qos=1, retain=True)
        forged.wait_for_publish(10)
        answer = operator.command(TOPIC, '{"value": 12, "id": "op-2"}')
        assert (answer["ok"], answer["value"]) == (True, 12)
        viewer.wait_for(lambda r: r["point"] == "sp" and r["value"] == 12, timeout=30)

        assert [e["id"] for e in events(gateway, "command")] == ["op-1", "op-2"]
        assert 99 not in {r["value"] for r in viewer.readings() if r["point"] == "sp"}
        states = [p for t, p, _ in viewer.snapshot() if t == STATUS]
        assert states and all(s["state"] == "online" for s in states), states
        # The gateway's password was read from the file and never logged.
        assert PASSWORDS["edge-01"] not in gateway.output()
    finally:
        if gateway is not None:
            gateway.stop()
        for client in (viewer, operator, intruder):
            client.close()
        sim.stop()
        broker.stop()
