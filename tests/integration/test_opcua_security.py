# ruff: noqa: E501  (device-map YAML reads best one point per line)
"""Encrypted OPC UA: trust is explicit, the refusal says which file to move where, users count."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

from adapters.opcua.security import ensure_certificate
from tests.helpers import Collector, Mosquitto, Process, free_port
from tests.integration.opcua_plant import SimThread, browse, latest, opcua_device
from tests.integration.plant import write_map

SECURE = """
    security: {policy: Basic256Sha256, mode: SignAndEncrypt}
    username: operator
    password: s3cret"""
POINTS = """
      - {name: temperature, node: "ns=2;s=Oven.Temperature", unit: degC, sim: {constant: 180.5}}
      - {name: state, browse_path: "0:Objects/2:Oven/2:State", sim: {constant: RUN}}"""


def _events(log: str, event: str) -> list[dict[str, object]]:
    return [
        e
        for e in map(json.loads, (x for x in log.splitlines() if x.startswith("{")))
        if e.get("event") == event
    ]


def test_untrusted_server_is_refused_then_trusted_by_moving_one_file(
    workdir: Path, broker: Mosquitto
) -> None:
    port = free_port()
    path = write_map(
        workdir / "map.yaml", broker.port, [opcua_device("oven-1", port, POINTS, extra=SECURE)]
    )
    sim = SimThread(path)
    collector = Collector(broker.port, "acme/#")
    gateway = Process("run", str(path), log=workdir / "gateway.log")
    try:
        refused = collector.wait_for(lambda r: r["quality"] == "bad", timeout=30)
        assert refused["reason"] == "server certificate not trusted"
        # Our own application certificate was generated beside the map, with its key.
        assert (workdir / "pki" / "own" / "cert.der").is_file()
        assert (workdir / "pki" / "own" / "key.pem").stat().st_mode & 0o077 == 0
        # The log tells the user which file to move where.
        deadline = time.monotonic() + 10
        while not _events(gateway.output(), "device unreachable"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        detail = str(_events(gateway.output(), "device unreachable")[0]["detail"])
        match = re.search(
            r"was saved as (.+\.der); to trust this server, move that file into (.+)/$", detail
        )
        assert match, detail
        rejected, trusted = Path(match.group(1)), Path(match.group(2))
        assert (
            rejected.parent == workdir / "pki" / "rejected"
            and trusted == workdir / "pki" / "trusted"
        )
        trusted.mkdir(parents=True, exist_ok=True)
        shutil.move(rejected, trusted / rejected.name)
        # No restart: the next retry connects, encrypted, as the configured user.
        mark = len(collector.readings())
        deadline = time.monotonic() + 45
        while True:
            now = latest(collector.readings()[mark:], "oven-1")
            if {p: r["quality"] for p, r in now.items()} == {
                "temperature": "good",
                "state": "good",
            }:
                break
            assert time.monotonic() < deadline, gateway.output()[-2000:]
            time.sleep(0.2)
        assert (now["temperature"]["value"], now["temperature"]["unit"]) == (180.5, "degC")
        assert now["state"]["value"] == "RUN"
        server = sim.server("oven-1")
        policies = sim.sync(lambda: server.channel_policies())
        assert policies == ["http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"]
        assert sim.sync(lambda: server.session_users()) == ["operator"]
        # The password never reaches the log.
        assert "s3cret" not in gateway.output()
    finally:
        gateway.stop()
        collector.close()
        sim.close()

    # A wrong password is refused by the server, with its status as the reason.
    sim = SimThread(path)
    try:
        secure = ("--security", "Basic256Sha256,SignAndEncrypt", "--pki", str(workdir / "pki"))
        endpoint = f"opc.tcp://127.0.0.1:{port}/sim"
        result = browse(endpoint, *secure, "--username", "operator", "--password", "wrong")
        assert result.returncode == 1
        assert "Bad" in result.stderr and "Traceback" not in result.stderr, result.stderr
        # The right one browses the encrypted server, given where no other user sees it.
        password = {"OPCUA_PASSWORD": "s3cret"}
        result = browse(endpoint, *secure, "--username", "operator", env=password)
        assert result.returncode == 0, result.stderr
        assert "(ns=2;s=Oven.Temperature)  Double r" in result.stdout
    finally:
        sim.close()


def test_every_policy_and_mode_and_a_certificate_identity(workdir: Path, broker: Mosquitto) -> None:
    ensure_certificate(
        workdir / "user" / "cert.der", workdir / "user" / "key.pem", "urn:test:operator"
    )
    cases = {
        "aes128-sign": "{policy: Aes128_Sha256_RsaOaep, mode: Sign}",
        "aes256-encrypt": "{policy: Aes256_Sha256_RsaPss, mode: SignAndEncrypt}",
        "basic256-sign": "{policy: Basic256Sha256, mode: Sign}",
    }
    identity = {
        "aes128-sign": "\n    username: operator\n    password: s3cret",
        "aes256-encrypt": "\n    user_certificate: user/cert.der\n    user_private_key: user/key.pem",
        "basic256-sign": "",  # anonymous: accepted, as no user is configured on this endpoint
    }
    ports = {name: free_port() for name in cases}
    devices = [
        opcua_device(
            name,
            ports[name],
            POINTS,
            extra=f"\n    security: {policy}\n    trust_on_first_use: true{identity[name]}",
        )
        for name, policy in cases.items()
    ]
    path = write_map(workdir / "map.yaml", broker.port, devices)
    sim = SimThread(path)
    collector = Collector(broker.port, "acme/#")
    gateway = Process("run", str(path), log=workdir / "gateway.log")
    try:
        deadline = time.monotonic() + 45
        while True:
            good = {
                (r["device"], r["point"]) for r in collector.readings() if r["quality"] == "good"
            }
            if good >= {(name, p) for name in cases for p in ("temperature", "state")}:
                break
            assert time.monotonic() < deadline, gateway.output()[-3000:]
            time.sleep(0.2)
        uris = {name: sim.sync(sim.server(name).channel_policies) for name in cases}
        assert uris == {
            "aes128-sign": ["http://opcfoundation.org/UA/SecurityPolicy#Aes128_Sha256_RsaOaep"],
            "aes256-encrypt": ["http://opcfoundation.org/UA/SecurityPolicy#Aes256_Sha256_RsaPss"],
            "basic256-sign": ["http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"],
        }
        assert sim.sync(sim.server("aes128-sign").session_users) == ["operator"]
        assert sim.sync(sim.server("aes256-encrypt").session_users) == ["certificate"]
        # Trust on first use saved each server's certificate into the trust folder.
        assert len(list((workdir / "pki" / "trusted").glob("*.der"))) == 3
        assert len(_events(gateway.output(), "trusting server certificate on first use")) == 3
    finally:
        gateway.stop()
        collector.close()
        sim.close()
