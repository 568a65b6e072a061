#!/bin/sh
# Installs factory-gateway as a systemd service on a Debian edge box (docs/edge-install.md):
# a system user, a venv in /opt/factory-gateway, the map in /etc/factory-gateway (kept if it
# exists), the unit enabled and started. Run it as root from the source tree; run it again to
# upgrade.
set -eu

SOURCE=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/factory-gateway
CONFIG=/etc/factory-gateway
USER=factory-gateway

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run it as root (sudo $0)" >&2
    exit 1
fi
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    echo "install.sh: python3-venv is missing: apt-get install -y python3-venv" >&2
    exit 1
fi

id "$USER" >/dev/null 2>&1 ||
    useradd --system --home-dir /var/lib/factory-gateway --no-create-home \
        --shell /usr/sbin/nologin --groups dialout "$USER"

# Built from a copy: the build leaves nothing (owned by root) in the source tree.
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
tar -C "$SOURCE" --exclude=./.venv --exclude=./.git --exclude=./build --exclude='*.egg-info' \
    --exclude='./.*_cache' --exclude=./.hypothesis --exclude=./bench/results \
    -cf - . | tar -C "$BUILD" -xf -
python3 -m venv "$PREFIX"
"$PREFIX/bin/pip" install --quiet --disable-pip-version-check "$BUILD[fast]"

install -d -m 0750 -o root -g "$USER" "$CONFIG"
install -d -m 0700 -o "$USER" -g "$USER" "$CONFIG/pki"
if [ ! -e "$CONFIG/gateway.yaml" ]; then
    install -m 0640 -o root -g "$USER" "$SOURCE/configs/example.yaml" "$CONFIG/gateway.yaml"
fi
# A map reading systemd credentials (${file:$CREDENTIALS_DIRECTORY/...}) finds them beside it.
CREDENTIALS_DIRECTORY="$CONFIG" "$PREFIX/bin/factory-gateway" validate "$CONFIG/gateway.yaml"

install -m 0644 "$SOURCE/deploy/factory-gateway.service" /etc/systemd/system/
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now factory-gateway.service
    systemctl --no-pager --lines=5 status factory-gateway.service || true
else
    echo "install.sh: systemd is not running here; enable the unit on the edge box:"
    echo "  systemctl enable --now factory-gateway.service"
fi
