"""``factory-gateway plan``: the bus load a device map will cause, before touching a plant.

Adapters with a request plan describe each device as a ``DevicePlan``; this module adds the
totals and renders the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DevicePlan:
    device: str
    link: str  # e.g. "modbus-tcp 10.0.0.5:502 unit 1"
    lines: list[str] = field(default_factory=list)  # one per request
    requests_per_s: float = 0.0
    registers_per_s: float = 0.0  # what the requests read, in ``unit`` (bits count 16 to a
    unused_per_s: float = 0.0  # Modbus register)
    naive_requests_per_s: float = 0.0  # one request per point, as many gateways do
    unit: str = "registers"  # what the protocol reads: Modbus registers, S7 bytes


def render(plans: list[DevicePlan]) -> str:
    out: list[str] = []
    for plan in plans:
        out.append(f"{plan.device}  ({plan.link})")
        out.extend(f"  {line}" for line in plan.lines)
        out.append(
            f"  = {plan.requests_per_s:.1f} requests/s, {plan.registers_per_s:.1f} {plan.unit}/s "
            f"({plan.unused_per_s:.1f} unused); one request per point: "
            f"{plan.naive_requests_per_s:.1f} requests/s"
        )
        out.append("")
    requests = sum(p.requests_per_s for p in plans)
    naive = sum(p.naive_requests_per_s for p in plans)
    saving = f" ({100 * (1 - requests / naive):.0f}% fewer)" if naive else ""
    read = ", ".join(
        f"{sum(p.registers_per_s for p in plans if p.unit == unit):.1f} {unit}/s "
        f"({sum(p.unused_per_s for p in plans if p.unit == unit):.1f} unused)"
        for unit in dict.fromkeys(p.unit for p in plans)
    )
    out.append(
        f"TOTAL  {len(plans)} devices: {requests:.1f} requests/s, {read}; "
        f"one request per point would be {naive:.1f} requests/s{saving}"
    )
    return "\n".join(out)
