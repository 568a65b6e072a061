"""A real RabbitMQ cluster with its MQTT plugin on loopback, for integration tests of broker
fail-over (a node crashes, the gateway reconnects to another one).

Debian's rabbitmq-server (3.10) is run as installed, never its service: every node, its files,
ports and Erlang cookie, and the cluster's epmd are private to ``workdir``. Known behaviours of
its MQTT plugin: retained messages are node-local (and only sent to subscriptions without
wildcards); a will is lost when its client's node crashes; a persistent session lives in a queue
on the node it was created on, and cannot subscribe again elsewhere while that node is down.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.mosquitto import free_port, wait_port

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
# A node boots in ~5 s; but one restarted while the surviving nodes' MQTT client-id tracker (a
# Raft cluster) has no leader waits 100 s for one before it opens its MQTT listener.
START_TIMEOUT = 180.0


def mqtt_connack(port: int, timeout: float = 5.0) -> int | None:
    """The return code of a real MQTT CONNECT to loopback ``port``; None without a CONNACK."""
    codes: list[int] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fg-probe-{uuid.uuid4().hex[:12]}")
    client.on_connect = lambda _c, _u, _f, rc, _p: codes.append(rc.value)
    deadline = time.monotonic() + timeout
    try:
        client.connect("127.0.0.1", port, keepalive=10)
        while not codes and time.monotonic() < deadline:
            if client.loop(0.1) != mqtt.MQTT_ERR_SUCCESS:
                break
        client.disconnect()
    except OSError:
        pass
    finally:
        sock = client.socket()
        if sock is not None:
            sock.close()
    return codes[0] if codes else None


def _name(i: int) -> str:
    return f"fg-{'abcdefghij'[i]}@localhost"


class _Node:
    """One node: its directory, its ports, its configuration and its VM process."""

    def __init__(self, cluster: RabbitCluster, i: int) -> None:
        self.name = _name(i)
        self.dir = cluster.workdir / self.name.split("@")[0]
        self.amqp, self.dist, self.mqtt = free_port(), free_port(), free_port()
        self.log = self.dir / "log" / "rabbit.log"
        self.proc: subprocess.Popen[bytes] | None = None
        (self.dir / "log").mkdir(parents=True, exist_ok=True)
        # A blank node joins the first one when it boots (peer discovery, no rabbitmqctl).
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.amqp}\n"
            f"mqtt.listeners.tcp.1 = 127.0.0.1:{self.mqtt}\n"
            "log.console = false\nlog.file.level = info\n"
            "cluster_formation.peer_discovery_backend = classic_config\n"
            f"cluster_formation.classic_config.nodes.1 = {_name(0)}\n"
            f"cluster_formation.classic_config.nodes.2 = {self.name}\n"
        )
        (self.dir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        self.env = cluster.env | {
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp),
            "RABBITMQ_DIST_PORT": str(self.dist),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),  # none
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "data"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_LOGS": str(self.log),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            # The script then execs the VM (no shell in between to pass signals on); no input.
            "RABBITMQ_ALLOW_INPUT": "true",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-noinput "
            "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_SCHEDULER_BIND_TYPE": "u",  # several VMs share the cores: bind none
        }

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self, group: int) -> None:
        with (self.dir / "log" / "console.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [str(RABBIT_BIN / "rabbitmq-server")],
                env=self.env,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                process_group=group,
            )

    def signal(self, sig: int) -> None:
        """Signal the VM, which is our child itself (its helpers, erl_child_setup, are in a
        session of their own and exit with it)."""
        if self.proc is not None and self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def tail(self, lines: int = 30) -> str:
        logs = [p for p in (self.log, self.dir / "log" / "console.log") if p.exists()]
        text = [[f"--- {p}", *p.read_text(errors="replace").splitlines()[-lines:]] for p in logs]
        return "\n".join("\n".join(part) for part in text)


class RabbitCluster:
    """``nodes`` RabbitMQ nodes (``fg-a@localhost``...) in one cluster, each with the MQTT
    plugin on a free loopback port. ``start()`` them, ``kill(i)`` and ``restart(i)`` one,
    ``stop()`` them all (a fixture's teardown; at the latest when this process exits)."""

    def __init__(self, workdir: Path, nodes: int = 3) -> None:
        if not (RABBIT_BIN / "rabbitmq-server").exists() or shutil.which("epmd") is None:
            raise RuntimeError(
                "rabbitmq is not installed: `make test` installs Debian's rabbitmq-server"
            )
        self.workdir = workdir
        home = workdir / "home"  # the Erlang cookie, for the nodes and rabbitmqctl
        home.mkdir(parents=True, exist_ok=True)
        (home / ".erlang.cookie").touch(mode=0o600)
        (home / ".erlang.cookie").write_text(uuid.uuid4().hex)
        self.epmd_port = free_port()
        (workdir / "rabbitmq-env.conf").write_text("")  # instead of Debian's /etc/rabbitmq one
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(home),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
            "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self.nodes = [_Node(self, i) for i in range(nodes)]
        self.epmd: subprocess.Popen[bytes] | None = None
        self.watchdog: subprocess.Popen[bytes] | None = None

    def mqtt_port(self, i: int) -> int:
        return self.nodes[i].mqtt

    def url(self, i: int) -> str:
        return f"mqtt://127.0.0.1:{self.nodes[i].mqtt}"

    def start(self) -> None:
        """Start epmd and the nodes (the first alone, then the others, which join it); return
        when each accepts MQTT connections and all run in one cluster."""
        atexit.register(self.stop)
        # The leader of the process group of epmd and the nodes: it kills the group when its
        # stdin closes, at stop() or when this process dies however (even SIGKILLed).
        self.watchdog = subprocess.Popen(
            ["sh", "-c", "read _; kill -KILL 0"], stdin=subprocess.PIPE, process_group=0
        )
        self.epmd = subprocess.Popen(
            ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=self.watchdog.pid,
        )
        try:
            # Listening before any node starts: a node that finds no epmd starts one of its
            # own, detached, which the watchdog would not stop.
            wait_port(self.epmd_port)
            self.nodes[0].spawn(self.watchdog.pid)
            self._await(0)
            for node in self.nodes[1:]:
                node.spawn(self.watchdog.pid)
            for i in range(1, len(self.nodes)):
                self._await(i)
            self._await_cluster(0, {node.name for node in self.nodes})
        except BaseException:
            self.stop()
            raise

    def kill(self, i: int) -> None:
        """Crash node ``i`` (SIGKILL of its VM); return when its MQTT port refuses connections."""
        node = self.nodes[i]
        node.signal(signal.SIGKILL)
        if node.proc is not None:
            node.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while mqtt_connack(node.mqtt, timeout=1) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{node.name} still answers MQTT after SIGKILL")
            time.sleep(0.1)

    def restart(self, i: int) -> None:
        """Start node ``i`` again on its data; return when it accepts MQTT connections and a
        running peer sees it back in the cluster."""
        if self.watchdog is None or self.nodes[i].running():
            raise RuntimeError(f"{self.nodes[i].name}: restart() after start() and kill()")
        self.nodes[i].spawn(self.watchdog.pid)
        self._await(i)
        peers = [j for j, node in enumerate(self.nodes) if node.running() and j != i]
        self._await_cluster(peers[0] if peers else i, {self.nodes[i].name})

    def stop(self) -> None:
        """Stop the nodes (SIGTERM, 10 s at most), then SIGKILL whatever is left, and epmd;
        idempotent and bounded."""
        for node in self.nodes:
            node.signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for node in self.nodes:
            if node.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        if self.watchdog is not None and self.watchdog.stdin is not None:
            self.watchdog.stdin.close()  # the watchdog kills the group
        for proc in [self.watchdog, self.epmd, *(node.proc for node in self.nodes)]:
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        atexit.unregister(self.stop)

    def ctl(self, i: int, *args: str, timeout: float = 60) -> str:
        """``rabbitmqctl -n <node i> args...`` (with the cluster's cookie and epmd); its stdout."""
        done = subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", self.nodes[i].name, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def _await(self, i: int) -> None:
        node = self.nodes[i]
        deadline = time.monotonic() + START_TIMEOUT
        while mqtt_connack(node.mqtt) != 0:
            if not node.running() or time.monotonic() > deadline:
                state = "timed out" if node.running() else "exited"
                raise RuntimeError(f"RabbitMQ node {node.name} {state}:\n{node.tail()}")
            time.sleep(0.2)

    def _await_cluster(self, i: int, names: set[str]) -> None:
        """Until node ``i`` sees ``names`` running, in the cluster and in the MQTT client-id
        tracker (a Raft cluster: a node that failed to join it would pass the other checks)."""
        deadline = time.monotonic() + 60
        while True:
            status = json.loads(self.ctl(i, "cluster_status", "--formatter", "json"))
            running = set(status.get("running_nodes", []))
            members = self.ctl(i, "eval", "ra:members(mqtt_node:server_id()).")
            if names <= running and all(f"'{name}'" in members for name in names):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{sorted(names)} not all in the cluster: {running} {members}")
            time.sleep(1)
