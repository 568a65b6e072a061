"""The systemd unit and the notify protocol, tested without systemd: the test owns the
``NOTIFY_SOCKET`` the gateway writes to, as systemd would."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.helpers import ROOT, Mosquitto, Process, free_port, until, wait_port
from tests.integration.line import log_events
from tests.integration.plant import device, write_map

UNIT = ROOT / "deploy" / "factory-gateway.service"
COUNTER = (
    "\n      - {name: c, table: holding, address: 0, type: uint16, "
    "sim: {counter: {interval: 100ms}}}"
)


class NotifySocket:
    """A datagram socket in the place of systemd's; keeps every message received."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="notify-"))  # a short path (108 bytes max)
        self.path = self.folder / "notify"
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(self.path))
        self.socket.settimeout(0.1)
        self.messages: list[dict[str, str]] = []

    def receive(self) -> list[dict[str, str]]:
        """Everything received so far, each message as its ``KEY=value`` fields."""
        while True:
            try:
                data = self.socket.recv(4096)
            except TimeoutError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append(fields)

    def count(self, key: str) -> int:
        return sum(1 for m in self.receive() if key in m)

    def close(self) -> None:
        self.socket.close()
        shutil.rmtree(self.folder)


def test_ready_watchdog_reload_and_stopping_reach_the_notify_socket(
    workdir: Path, broker: Mosquitto
) -> None:
    ports = {"plc-a": free_port(), "plc-b": free_port()}
    devices = [device(name, port, COUNTER) for name, port in ports.items()]
    sim = Process(
        "simulate", str(write_map(workdir / "sim.yaml", broker.port, devices)),
        log=workdir / "sim.log",
    )  # fmt: skip
    http = free_port()
    sections = f"http: {{listen: 127.0.0.1:{http}}}"
    path = write_map(workdir / "gw.yaml", broker.port, devices[:1], sections=sections)
    notify = NotifySocket()
    gateway = None
    try:
        for port in ports.values():
            wait_port(port)
        env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
        gateway = Process("run", str(path), log=workdir / "gw.log", env=env)
        until(lambda: notify.count("READY"), "READY=1")
        first = notify.receive()[0]
        assert first == {"READY": "1", "STATUS": "running"}
        # Ready means the probes answer: the listener was up before READY=1 went out.
        order = [e["event"] for e in log_events(gateway)]
        assert order.index("HTTP listener started") < order.index("gateway running")
        socket.create_connection(("127.0.0.1", http), timeout=5).close()
        # The watchdog is fed from the event loop, every half period (0.2 s here).
        until(lambda: notify.count("WATCHDOG") >= 5, "five WATCHDOG=1")

        write_map(path, broker.port, devices, sections=sections)
        gateway.proc.send_signal(signal.SIGHUP)
        until(lambda: notify.count("READY") == 2, "READY=1 after the reload")
        states = [m for m in notify.receive() if "WATCHDOG" not in m]
        reloading = states[1]
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
        assert states[2] == first

        assert gateway.stop() == 0
        assert notify.receive()[-1] == {"STOPPING": "1"}
    finally:
        if gateway is not None:
            gateway.stop()
        sim.stop()
        notify.close()


def test_the_unit_passes_systemd_analyze_verify(workdir: Path) -> None:
    """``systemd-analyze verify`` checks the unit's syntax and that ExecStart exists: the
    installed path is swapped for this environment's own command."""
    command = Path(sys.executable).parent / "factory-gateway"
    assert command.exists()
    unit = workdir / UNIT.name
    text = UNIT.read_text()
    assert "ExecStart=/opt/factory-gateway/bin/factory-gateway run " in text
    unit.write_text(text.replace("/opt/factory-gateway/bin/factory-gateway", str(command)))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True
    )
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    settings = (
        "Type=notify", "WatchdogSec=", "ExecReload=/bin/kill -HUP $MAINPID",
        "User=factory-gateway", "StateDirectory=factory-gateway", "ProtectSystem=strict",
        "NoNewPrivileges=true", "Restart=on-failure",
    )  # fmt: skip
    for setting in settings:
        assert f"\n{setting}" in text
    installer = subprocess.run(["sh", "-n", str(ROOT / "deploy" / "install.sh")])
    assert installer.returncode == 0


def test_under_the_journal_each_line_says_its_priority(workdir: Path, broker: Mosquitto) -> None:
    """With stderr on the journal ($JOURNAL_STREAM names it), lines start with their syslog
    priority, so `journalctl -p warning` finds the warnings; elsewhere they do not."""
    unreachable = device("plc-gone", free_port(), COUNTER)  # nothing listens: a warning
    path = write_map(workdir / "gw.yaml", broker.port, [unreachable])
    log = workdir / "journal.log"
    log.touch()
    info = log.stat()
    gateway = Process(
        "run", str(path), log=log, env={"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
    )
    try:
        lines = until(
            lambda: (
                text.splitlines()
                if "device unreachable" in (text := gateway.output()) and "gateway running" in text
                else None
            ),
            "the gateway running, and the device unreachable",
        )
    finally:
        assert gateway.stop() == 0
    assert all(re.match(r"<[2-7]>\{", line) for line in lines), lines
    by_event = {json.loads(line[3:])["event"]: line[:3] for line in lines}
    assert by_event["gateway running"] == "<6>"
    assert by_event["device unreachable"] == "<4>"


def test_the_shard_template_passes_systemd_analyze_verify(workdir: Path) -> None:
    """``factory-gateway@.service``: an instance per shard of one map, verified as the
    instance ``@a`` (systemd loads the template and checks its ExecStart), running that
    shard's devices."""
    command = Path(sys.executable).parent / "factory-gateway"
    template = ROOT / "deploy" / "factory-gateway@.service"
    text = template.read_text()
    assert "run /etc/factory-gateway/gateway.yaml --only shard=%i\n" in text
    assert "validate /etc/factory-gateway/gateway.yaml --only shard=%i\n" in text
    assert "\nEnvironmentFile=-/etc/factory-gateway/%i.env\n" in text
    # The same service otherwise: the single unit's settings, line for line.
    single = set(UNIT.read_text().splitlines())
    different = [line for line in text.splitlines() if line not in single and line[:1] != "#"]
    assert different == [
        "Description=factory-gateway shard %i: factory devices to MQTT",
        "ExecStart=/opt/factory-gateway/bin/factory-gateway run /etc/factory-gateway/gateway.yaml"
        " --only shard=%i",
        "ExecReload=/opt/factory-gateway/bin/factory-gateway validate "
        "/etc/factory-gateway/gateway.yaml --only shard=%i",
        "EnvironmentFile=-/etc/factory-gateway/%i.env",
    ]
    (workdir / template.name).write_text(
        text.replace("/opt/factory-gateway/bin/factory-gateway", str(command))
    )
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(workdir / "factory-gateway@a.service")],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
