"""``factory-gateway browse``: the OPC UA adapter's own command (see browse.py for the walk)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path

from gateway.adapter import Tool
from gateway.errors import GatewayError


def _arguments(browse: argparse.ArgumentParser) -> None:
    browse.add_argument("endpoint", metavar="ENDPOINT", help="opc.tcp://host:port/path")
    browse.add_argument("--depth", type=int, default=6, help="levels below Objects (default 6)")
    browse.add_argument("--yaml", action="store_true", help="print points: entries for a map")
    browse.add_argument(
        "--security",
        default="None",
        metavar="POLICY[,MODE]",
        help="e.g. Basic256Sha256,SignAndEncrypt (default None)",
    )
    browse.add_argument("--username", default=None)
    browse.add_argument(
        "--password",
        default=None,
        help="visible to every local user in the process list: prefer $OPCUA_PASSWORD, or "
        "the prompt that asks for it when --username is given without one",
    )
    browse.add_argument(
        "--pki", type=Path, default=Path("pki"), help="own certificate and trust folders"
    )
    browse.add_argument("--trust-on-first-use", action="store_true")
    browse.add_argument("--timeout", default="5s")
    browse.add_argument(
        "--all", action="store_true", help="include namespace 0's standard nodes (Server...)"
    )


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from adapters.opcua.browse import browse, render_points, render_tree
    from adapters.opcua.config import OpcUaDevice

    policy, _, mode = args.security.partition(",")
    password = args.password
    if args.username is not None and password is None:
        password = os.environ.get("OPCUA_PASSWORD")
        if password is None and sys.stdin.isatty():
            password = getpass.getpass(f"password of {args.username} (empty: none): ") or None
    try:
        device = OpcUaDevice.model_validate(
            {
                "id": "browse",
                "line": "cli",
                "protocol": "opcua",
                "endpoint": args.endpoint,
                "timeout": args.timeout,
                "security": {
                    "policy": policy,
                    "mode": mode or ("None" if policy == "None" else "SignAndEncrypt"),
                },
                "username": args.username,
                "password": password,
                "certificate": args.pki / "own" / "cert.der",
                "private_key": args.pki / "own" / "key.pem",
                "trust": args.pki / "trusted",
                "trust_on_first_use": args.trust_on_first_use,
                "points": [{"name": "objects", "node": "i=85"}],
            }
        )
    except ValidationError as exc:
        for error in exc.errors():
            print(f"error: {error['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 1
    try:
        space = asyncio.run(browse(device, args.depth, args.all))
    except GatewayError as exc:
        print(f"error: {args.endpoint}: {getattr(exc, 'detail', None) or exc}", file=sys.stderr)
        return 1
    print(render_points(space) if args.yaml else render_tree(space))
    return 0


BROWSE = Tool(
    "browse", "print an OPC UA server's address space, or map entries for it", _arguments, _run
)
