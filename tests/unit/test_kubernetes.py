"""The Kubernetes manifests of deploy/kubernetes: valid against the API's schemas (strict: an
unknown or misspelt field is an error, as it would otherwise be dropped without a word), one
gateway per shard with the guarantees deploy/kubernetes/README.md promises, and a plant map
whose shards are exactly the Deployments'.

The schemas come with kubernetes-validate (offline); the map is checked by the gateway itself
(``factory-gateway validate``)."""

from __future__ import annotations

import copy
import http.server
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.registry import load_config
from tests.helpers import ROOT, cli

# The whole file takes about 3 s: a minute means something hangs.
pytestmark = pytest.mark.timeout(60)

FOLDER = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes a plant's cluster is likely to still run, and the newest the installed
# kubernetes-validate knows (pyproject.toml's lower bound on it must be at least this one).
VERSIONS = ("1.29", "1.37")
IMAGE_USER = 10001  # the Dockerfile's `useradd --uid`
PORT = 9108  # the map's http.listen, the image's HEALTHCHECK
NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
TOKEN = "0123456789abcdef"  # what a pod has in HTTP_TOKEN (from the Secret)

Doc = dict[str, Any]


def documents() -> list[tuple[Path, Doc]]:
    """Every document of every YAML file in deploy/kubernetes, with its file."""
    paths = sorted([*FOLDER.glob("*.yaml"), *FOLDER.glob("*.yml")])
    assert paths, f"no manifests in {FOLDER}"
    return [(p, doc) for p in paths for doc in yaml.safe_load_all(p.read_text()) if doc]


def of_kind(kind: str) -> list[tuple[Path, Doc]]:
    return [(path, doc) for path, doc in documents() if doc["kind"] == kind]


def deployments() -> list[tuple[Path, Doc]]:
    found = of_kind("Deployment")
    assert found, "no Deployment in deploy/kubernetes"
    return found


def container(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    result: Doc = containers[0]
    return result


def shard_of(deployment: Doc) -> str:
    """``X`` of the container's ``--only shard=X``."""
    args = container(deployment)["args"]
    assert args[:2] == ["run", "/config/plant.yaml"], args
    assert args.count("--only") == 1, args
    selector = args[args.index("--only") + 1]
    key, _, shard = selector.partition("=")
    assert key == "shard" and shard and "," not in shard, f"--only {selector}: one shard=X"
    return shard


def volume_at(deployment: Doc, mount_path: str) -> tuple[Doc, Doc]:
    """The volume mounted at ``mount_path``, and its mount."""
    mounts = [m for m in container(deployment)["volumeMounts"] if m["mountPath"] == mount_path]
    assert len(mounts) == 1, f"{deployment['metadata']['name']}: nothing mounted at {mount_path}"
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    (volume,) = (v for v in volumes if v["name"] == mounts[0]["name"])
    return volume, mounts[0]


def port_number(deployment: Doc, port: int | str) -> int:
    """A probe's port, named or not, as a number."""
    if isinstance(port, int):
        return port
    (found,) = (p["containerPort"] for p in container(deployment)["ports"] if p["name"] == port)
    assert isinstance(found, int)
    return found


def plant_map() -> tuple[str, int]:
    """The ConfigMap's map, and the line of plant-map.yaml its first line is on."""
    (path, config_map), *more = of_kind("ConfigMap")
    assert not more, "one ConfigMap: the plant's map"
    text: str = config_map["data"]["plant.yaml"]
    first = next(
        n for n, line in enumerate(path.read_text().splitlines(), 1) if "plant.yaml: |" in line
    )
    return text, first + 1


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_for_kubernetes(version: str) -> None:
    errors = []
    for path, doc in documents():
        where = f"{path.name}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        try:
            checked = kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            at = ".".join(str(step) for step in exc.path)
            errors.append(f"{where}: {at}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{where}: {exc.message}")
        else:
            assert checked == version  # against this version's schemas, not an older one
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        # A misspelt field: kubectl's client-side apply would drop it without a word.
        pytest.param(
            lambda c: c.update(imagePullPolice="Always"),
            "'imagePullPolice' was unexpected",
            id="misspelt-container-field",
        ),
        pytest.param(
            lambda c: c["securityContext"].update(readOnlyRootFileSystem=True),
            "'readOnlyRootFileSystem' was unexpected",
            id="misspelt-security-field",
        ),
        pytest.param(
            lambda c: c["livenessProbe"]["httpGet"].update(port=[PORT]),
            "is not valid",
            id="port-of-wrong-type",
        ),
        pytest.param(
            lambda c: c["resources"]["requests"].update(memory={"Mi": 128}),
            "is not valid",
            id="quantity-of-wrong-type",
        ),
    ],
)
def test_the_linter_refuses_a_broken_deployment(change: Any, says: str) -> None:
    _, deployment = deployments()[0]
    broken = copy.deepcopy(deployment)
    change(container(broken))
    with pytest.raises(kubernetes_validate.ValidationError, match=says):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)
    if "unexpected" in says:  # strict is what catches a misspelt field
        assert kubernetes_validate.validate(broken, VERSIONS[-1], strict=False)


def test_one_gateway_per_shard_with_its_own_buffer() -> None:
    claims = {doc["metadata"]["name"]: doc for _, doc in of_kind("PersistentVolumeClaim")}
    maps = {doc["metadata"]["name"]: doc for _, doc in of_kind("ConfigMap")}
    shards, claimed, config_maps = [], [], set()
    for path, deployment in deployments():
        name, spec = deployment["metadata"]["name"], deployment["spec"]
        shard = shard_of(deployment)
        shards.append(shard)
        # Never two pods of one shard: same devices, same MQTT client id, same buffer.
        assert spec["replicas"] == 1, name
        assert spec["strategy"] == {"type": "Recreate"}, name
        labels = spec["template"]["metadata"]["labels"]
        assert labels[NAME] == "factory-gateway", name
        instance = f"factory-gateway-{shard}"  # the file's name, labels and claim follow it
        assert labels[INSTANCE] == instance == name, f"{name} runs --only shard={shard}"
        assert labels[COMPONENT] == "gateway", name
        assert deployment["metadata"]["labels"] == labels, name
        assert spec["selector"] == {"matchLabels": {NAME: labels[NAME], INSTANCE: labels[INSTANCE]}}
        # Its buffer: a claim of its own, in the same file (copied with it), one node at a time.
        volume, mount = volume_at(deployment, "/data")
        claim = volume["persistentVolumeClaim"]["claimName"]
        assert claim in claims, f"{name}: no PersistentVolumeClaim {claim}"
        assert any(d["metadata"]["name"] == claim for p, d in documents() if p == path), path.name
        assert claims[claim]["spec"]["accessModes"] == ["ReadWriteOnce"], claim
        assert claims[claim]["metadata"]["labels"][INSTANCE] == labels[INSTANCE], claim
        assert not mount.get("readOnly"), name
        claimed.append(claim)
        # The plant's map, read-only.
        volume, mount = volume_at(deployment, "/config")
        assert mount.get("readOnly") is True, f"{name}: mount the map read-only"
        assert "subPath" not in mount, f"{name}: a subPath mount never sees the map's updates"
        config_maps.add(volume["configMap"]["name"])
    assert len(set(shards)) == len(shards), f"a shard runs twice: {sorted(shards)}"
    assert len(set(claimed)) == len(claimed), f"two shards share a buffer: {sorted(claimed)}"
    assert len(config_maps) == 1, f"every shard reads the same map, not {sorted(config_maps)}"
    assert config_maps <= set(maps), f"no ConfigMap {config_maps}"
    images = {container(d)["image"] for _, d in deployments()}
    assert len(images) == 1, f"every shard runs the same image, not {sorted(images)}"


def test_the_pods_run_unprivileged_on_a_read_only_system() -> None:
    for _, deployment in deployments():
        name, pod = deployment["metadata"]["name"], deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == IMAGE_USER, name
        assert pod["securityContext"]["fsGroup"] == IMAGE_USER, name  # the buffer is writable
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        # SIGTERM commits the buffer and says "offline": time for that, not minutes.
        assert 10 <= pod["terminationGracePeriodSeconds"] <= 60, name
        gateway = container(deployment)
        context = gateway["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        assert "privileged" not in context and context.get("runAsUser", IMAGE_USER) == IMAGE_USER
        tmp, _ = volume_at(deployment, "/tmp")
        assert "emptyDir" in tmp, name
        for bound in ("requests", "limits"):
            assert set(gateway["resources"][bound]) >= {"cpu", "memory"}, f"{name}: {bound}"


def test_the_probes_ask_the_gateway_and_only_readiness_needs_the_token() -> None:
    (_, secret), *more = of_kind("Secret")
    assert not more
    for _, deployment in deployments():
        name, gateway = deployment["metadata"]["name"], container(deployment)
        # Liveness: the open /healthz, no secret needed; given time to start first.
        for probe in ("startupProbe", "livenessProbe"):
            get = gateway[probe]["httpGet"]
            assert (get["path"], port_number(deployment, get["port"])) == ("/healthz", PORT)
            assert "httpHeaders" not in get, f"{name}: {probe} needs no token"
        startup = gateway["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, name
        # Readiness: /readyz with the token from the pod's environment, which comes from the
        # Secret.
        command = gateway["readinessProbe"]["exec"]["command"]
        assert command[:2] == ["python", "-c"], name
        assert f"http://127.0.0.1:{PORT}/readyz" in command[2], name
        assert 'os.environ["HTTP_TOKEN"]' in command[2], name
        assert gateway["env"] == [
            {
                "name": "HTTP_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "token"}},
            }
        ], name
        assert {"name": "http", "containerPort": PORT, "protocol": "TCP"} in gateway["ports"]


class Readyz(http.server.BaseHTTPRequestHandler):
    """/readyz as the gateway answers it: 401 without the token, then 200 or 503 with JSON."""

    ready = True

    def do_GET(self) -> None:
        if self.path != "/readyz":
            status, body = 404, b"not found"
        elif self.headers.get("Authorization") != f"Bearer {TOKEN}":
            status, body = 401, b"401: credentials required (http.auth in the device map)"
        elif self.ready:
            status, body = 200, b'{"ready": true}'
        else:
            status, body = 503, b'{"ready": false, "devices": {"press-01": {"ready": false}}}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_the_readiness_probe_sends_the_token_and_fails_on_anything_but_200() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Readyz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        script = container(deployments()[0][1])["readinessProbe"]["exec"]["command"][2]
        script = script.replace(f"127.0.0.1:{PORT}", f"127.0.0.1:{server.server_port}")

        def probe(token: str) -> subprocess.CompletedProcess[str]:
            env = {"HTTP_TOKEN": token, "PATH": "/usr/bin:/bin"}
            return subprocess.run(
                [sys.executable, "-c", script], capture_output=True, text=True, timeout=20, env=env
            )

        Readyz.ready = True
        ready = probe(TOKEN)
        assert ready.returncode == 0, ready.stderr
        wrong = probe("not-the-token-at-all")
        assert wrong.returncode == 1 and "401: credentials required" in wrong.stderr
        Readyz.ready = False
        down = probe(TOKEN)
        # kubectl describe pod shows this: which device is not ready.
        assert down.returncode == 1 and '"press-01": {"ready": false}' in down.stderr
        server.shutdown()
        server.server_close()
        gone = probe(TOKEN)
        assert gone.returncode == 1 and "Connection refused" in gone.stderr
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_map_runs_every_device_in_exactly_one_deployment(tmp_path: Path) -> None:
    text, first = plant_map()
    path = tmp_path / "plant.yaml"
    path.write_text(text)
    where = f"(line N of {path.name} is line N+{first - 1} of deploy/kubernetes/plant-map.yaml)"
    selectors = [f"shard={shard_of(d)}" for _, d in deployments()]
    env = {"HTTP_TOKEN": TOKEN}
    split = cli("validate", str(path), "--shards", *selectors, env=env)
    assert (split.returncode, split.stdout) == (0, "ok\n"), f"{split.stderr}{where}"
    for selector in selectors:  # --shards does not see a Deployment whose shard has no device
        alone = cli("validate", str(path), "--only", selector, env=env)
        assert (alone.returncode, alone.stdout) == (0, "ok\n"), f"--only {selector}: {alone.stderr}"


def test_the_map_listens_for_prometheus_with_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "plant.yaml"
    path.write_text(plant_map()[0])
    monkeypatch.setenv("HTTP_TOKEN", TOKEN)
    monkeypatch.setenv("BUFFER_PATH", "/data/buffer")  # as the image sets it
    config = load_config([path])
    assert config.http is not None and (config.http.host, config.http.port) == ("0.0.0.0", PORT)
    assert config.http.credentials is not None and config.http.credentials.token == TOKEN
    assert config.buffer.path == Path("/data/buffer")  # the claim, not the read-only /config


def test_the_example_secret_is_refused_by_the_gateway(tmp_path: Path) -> None:
    """Applied by mistake, the placeholder stops the gateway instead of guarding it."""
    (_, secret), *_ = of_kind("Secret")
    placeholder = secret["stringData"]["token"]
    path = tmp_path / "plant.yaml"
    path.write_text(plant_map()[0])
    refused = cli("validate", str(path), env={"HTTP_TOKEN": placeholder})
    assert refused.returncode == 1
    assert "a token is at least 12 characters without spaces" in refused.stderr
    assert placeholder not in refused.stderr + refused.stdout
