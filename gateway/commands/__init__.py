"""Commands: MQTT write requests checked, executed on the device, answered and audited."""

from gateway.commands.execute import Result, execute
from gateway.commands.request import Incoming, parse
from gateway.commands.router import CommandRouter

__all__ = ["CommandRouter", "Incoming", "Result", "execute", "parse"]
