"""The ``factory-gateway`` command: validate, run, plan, simulate, browse, write, demo.

Config mistakes are printed as ``file:line:col: message`` lines and exit 1; no traceback reaches
the user for them. Ctrl-C and SIGTERM stop cleanly (status ``offline`` published, connections
closed) with exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import gc
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from gateway import __version__, registry
from gateway.config.load import Config
from gateway.config.shards import coverage, parse_selector, select
from gateway.errors import ConfigError, GatewayError
from gateway.logging import configure

ONLY_HELP = (
    "{} only the devices this selects, as a shard with its own id, client id, status topic "
    "and buffer: key=pattern terms joined by commas (device, line, protocol, shard; shell "
    "globs), e.g. line=line-1 or shard=a"
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure(args.log_format, args.log_level)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factory-gateway",
        description="Read devices described by a YAML device map; publish to MQTT. Protocols: "
        + ", ".join(key for adapter in registry.ADAPTERS for key in adapter.models),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-format",
        choices=("auto", "console", "json"),
        default="auto",
        help="console on a terminal, JSON lines otherwise (default: auto)",
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info"
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop: uvloop is faster per value; auto uses it when installed (default)",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check device maps; print every error")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.add_argument("--only", metavar="SELECTOR", help=ONLY_HELP.format("check"))
    validate.add_argument(
        "--shards",
        nargs="+",
        metavar="SELECTOR",
        help="the selectors the map is run with: report a device no shard selects, or several, "
        "and a selector that selects none (give the files first)",
    )
    validate.set_defaults(handler=_validate)

    run = commands.add_parser("run", help="run the gateway")
    run.add_argument("file", type=Path, metavar="FILE")
    run.add_argument("--only", metavar="SELECTOR", help=ONLY_HELP.format("run"))
    run.add_argument(
        "--watch",
        action="store_true",
        help="reload when the map or a file it includes changes (SIGHUP reloads either way)",
    )
    run.set_defaults(handler=_run)

    plan = commands.add_parser(
        "plan", help="print each device's request plan and the bus load it causes"
    )
    plan.add_argument("file", type=Path, metavar="FILE")
    plan.add_argument("--only", metavar="SELECTOR", help=ONLY_HELP.format("plan"))
    plan.set_defaults(handler=_plan)

    simulate = commands.add_parser("simulate", help="simulate every device of a device map")
    simulate.add_argument("file", type=Path, metavar="FILE")
    simulate.set_defaults(handler=_simulate)

    for adapter in registry.ADAPTERS:  # commands of a protocol's own (OPC UA: browse)
        for tool in adapter.tools:
            parser_of_tool = commands.add_parser(tool.name, help=tool.help)
            tool.arguments(parser_of_tool)
            parser_of_tool.set_defaults(handler=tool.run)

    write = commands.add_parser(
        "write", help="write one point of a device now, with the map's checks and a read-back"
    )
    write.add_argument("file", type=Path, metavar="FILE")
    write.add_argument("device", metavar="DEVICE")
    write.add_argument("point", metavar="POINT")
    write.add_argument("value", metavar="VALUE", help="a JSON scalar (12.5, true) or a text")
    write.set_defaults(handler=_write)

    demo = commands.add_parser(
        "demo", help="simulators + embedded broker + gateway, with a live table of values"
    )
    demo.add_argument(
        "--config", type=Path, default=None, help="device map (default: the demo plant)"
    )
    demo.add_argument(
        "--broker",
        default=None,
        help="use this broker (mqtt://host:port) instead of the embedded one",
    )
    demo.add_argument(
        "--port", type=int, default=0, help="embedded broker port (default: a free one)"
    )
    demo.add_argument(
        "--format",
        choices=["json", "sparkplug"],
        default=None,
        help="publish JSON or Sparkplug B (default: the map's mqtt.format)",
    )
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.set_defaults(handler=_demo)
    return parser


def _load(paths: Sequence[Path], only: str | None = None) -> Config | None:
    """The map (``only``: the devices a selector picks, as a shard of its own), or None with
    every error printed."""
    try:
        if only is None:
            return registry.load_config(paths)
        return shard_loader(only)(paths)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        count = len(exc.issues)
        print(f"{count} error{'s' if count != 1 else ''}", file=sys.stderr)
    except GatewayError as exc:  # a selector that cannot be read, or selects nothing
        print(f"error: {exc}", file=sys.stderr)
    return None


def shard_loader(only: str) -> Callable[[Sequence[str | Path]], Config]:
    """``registry.load_config`` narrowed to a shard (for the first load and every reload)."""
    selector = parse_selector(only)
    return lambda paths: select(registry.load_config(paths), selector)


def _validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        config = _load([path], args.only)
        if config is None:
            failed = True
        elif args.shards:
            try:
                selectors = [parse_selector(s, "--shards") for s in args.shards]
                problems = coverage(config, selectors)
            except GatewayError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            for problem in problems:
                print(f"{path}: {problem}", file=sys.stderr)
            failed = failed or bool(problems)
    if failed:
        return 1
    print("ok")
    return 0


def _run(args: argparse.Namespace) -> int:
    # A reload asked for while the map is first read has nothing to reload yet (SIGHUP would
    # end the process); from the start of the loop on, SIGHUP reloads.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    config = _load([args.file], args.only)
    if config is None:
        return 1
    from gateway.reload import Reloader
    from gateway.runtime import Gateway
    from gateway.systemd import Notifier

    def start() -> Awaitable[None]:
        gateway = Gateway(config, Notifier.from_environment())
        load = registry.load_config if args.only is None else shard_loader(args.only)
        reloader = Reloader([args.file], load, gateway.apply, args.watch)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.request)
        # The map and everything built from it live as long as the process: frozen, the
        # collector stops walking them, instead of stalling every device while it walks every
        # object of a big map (docs/performance.md, step 9).
        gc.collect()
        gc.freeze()
        return gateway.run(reloader)

    return _run_until_signal(start, args.loop)


def _plan(args: argparse.Namespace) -> int:
    config = _load([args.file], args.only)
    if config is None:
        return 1
    from gateway.plan_report import render

    plans = []
    for device in config.devices:
        describe = registry.adapter_of(device.protocol).describe_plan
        if describe is not None:
            plans.append(describe(device))
    print(render(plans))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    config = _load([args.file])
    if config is None:
        return 1
    from simulators.run import serve

    return _run_until_signal(lambda: serve(config), args.loop)


def _write(args: argparse.Namespace) -> int:
    """Exit 0 when written and read back equal; the result (JSON) on stdout either way."""
    config = _load([args.file])
    if config is None:
        return 1
    from gateway.commands.direct import parse_value, write_directly

    try:
        value = parse_value(args.value)
        result = asyncio.run(write_directly(config, args.device, args.point, value))
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result.payload().decode())
    return 0 if result.ok else 1


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import DEMO_CONFIG, run_demo, with_format

    config = _load([args.config or DEMO_CONFIG])
    if config is None:
        return 1
    config = with_format(config, args.format)
    if args.duration is not None:
        # A bounded run must end: if shutdown hangs, print every thread's stack and exit.
        faulthandler.dump_traceback_later(args.duration + 20, exit=True)
    return _run_until_signal(
        lambda: run_demo(config, args.broker, args.port, args.duration), args.loop
    )


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop for ``--loop``: uvloop's C loop makes socket writes and timers cheaper.
    ``None`` is asyncio's own."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise GatewayError(
                "--loop uvloop: uvloop is not installed (pip install 'factory-gateway[fast]')"
            ) from None
        return None
    return uvloop.new_event_loop


def _run_until_signal(make: Callable[[], Awaitable[None]], loop: str = "auto") -> int:
    """Run a coroutine until it ends, Ctrl-C or SIGTERM; either signal stops it cleanly."""

    async def runner() -> None:
        task = asyncio.ensure_future(make())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        with asyncio.Runner(loop_factory=loop_factory(loop)) as asyncio_runner:
            asyncio_runner.run(runner())
    except (OSError, GatewayError) as exc:  # e.g. a port already in use
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
