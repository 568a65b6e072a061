"""``factory-gateway browse``: walk a server's address space, print it, or emit map entries.

The walk starts at the Objects folder and follows hierarchical references level by level (one
Browse call per level, one Read for the variables' DataType and AccessLevel), skipping the
standard nodes of namespace 0 (``Server``, ``Aliases``...) unless asked. ``--yaml`` prints
ready-to-paste ``points:`` entries whose node ids name the namespace by URI, so the map
survives a server renumbering its namespaces.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field

from asyncua import Client, ua

from adapters.opcua import security
from adapters.opcua.config import OpcUaDevice, SimDataType
from adapters.opcua.nodes import read_value_id
from adapters.opcua.source import translate_errors

OBJECTS = ua.NodeId(ua.Int32(ua.ObjectIds.ObjectsFolder))
HIERARCHICAL = ua.NodeId(ua.Int32(ua.ObjectIds.HierarchicalReferences))
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]+")


@dataclass
class Entry:
    node_id: ua.NodeId
    browse_name: ua.QualifiedName
    node_class: ua.NodeClass
    depth: int
    path: list[str]
    data_type: str = ""
    access: str = ""
    children: list[Entry] = field(default_factory=list)


@dataclass
class AddressSpace:
    entries: list[Entry]  # every node below Objects, in browse order
    namespaces: list[str]  # the server's namespace array


async def browse(device: OpcUaDevice, depth: int, include_standard: bool = False) -> AddressSpace:
    """Every node below Objects, ``depth`` levels deep."""
    client = Client(device.endpoint, timeout=device.timeout)
    with translate_errors(device):
        await security.configure(client, device)
        await client.connect()
        try:
            entries = await _walk(client, depth, include_standard)
            await _describe_variables(client, [e for e in entries if _is_variable(e)])
            namespaces = await client.get_namespace_array()
        finally:
            await client.disconnect()
    return AddressSpace(entries, namespaces)


async def _walk(client: Client, depth: int, include_standard: bool) -> list[Entry]:
    ordered: list[Entry] = []
    level: list[tuple[ua.NodeId, Entry | None]] = [(OBJECTS, None)]
    for current_depth in range(depth):
        if not level:
            break
        parameters = ua.BrowseParameters()
        parameters.NodesToBrowse = [_describe(node) for node, _ in level]
        results = await client.uaclient.browse(parameters)
        next_level: list[tuple[ua.NodeId, Entry | None]] = []
        for (_, parent), result in zip(level, results, strict=True):
            for reference in result.References:
                node_id = ua.NodeId(
                    reference.NodeId.Identifier,
                    reference.NodeId.NamespaceIndex,
                    reference.NodeId.NodeIdType,
                )
                # Namespace 0 below Objects is the standard's own furniture (Server, Aliases...).
                if parent is None and node_id.NamespaceIndex == 0 and not include_standard:
                    continue
                name = reference.BrowseName
                entry = Entry(
                    node_id,
                    name,
                    reference.NodeClass,
                    current_depth,
                    [*(parent.path if parent else []), name.Name],
                )
                (parent.children if parent else ordered).append(entry)
                next_level.append((node_id, entry))
        level = next_level
    return _flatten(ordered)


def _flatten(entries: list[Entry]) -> list[Entry]:
    out: list[Entry] = []
    for entry in entries:
        out.append(entry)
        out.extend(_flatten(entry.children))
    return out


def _describe(node: ua.NodeId) -> ua.BrowseDescription:
    description = ua.BrowseDescription()
    description.NodeId = node
    description.BrowseDirection = ua.BrowseDirection.Forward
    description.ReferenceTypeId = HIERARCHICAL
    description.IncludeSubtypes = True
    description.NodeClassMask = 0
    description.ResultMask = ua.BrowseResultMask.All
    return description


def _is_variable(entry: Entry) -> bool:
    return entry.node_class == ua.NodeClass.Variable


async def _describe_variables(client: Client, variables: list[Entry]) -> None:
    """DataType name and AccessLevel of every variable, in two batched Reads."""
    if not variables:
        return
    wanted = [
        read_value_id(entry.node_id, attribute)
        for entry in variables
        for attribute in (ua.AttributeIds.DataType, ua.AttributeIds.AccessLevel)
    ]
    values = []
    for start in range(0, len(wanted), 1000):
        parameters = ua.ReadParameters()
        parameters.NodesToRead = wanted[start : start + 1000]
        values.extend(await client.uaclient.read(parameters))
    for index, entry in enumerate(variables):
        data_type, access = values[2 * index].Value, values[2 * index + 1].Value
        if data_type is not None and isinstance(data_type.Value, ua.NodeId):
            entry.data_type = _type_name(data_type.Value)
        level = int(access.Value) if access is not None and access.Value is not None else 0
        readable = level & ua.AccessLevel.CurrentRead.mask
        writable = level & ua.AccessLevel.CurrentWrite.mask
        entry.access = ("r" if readable else "") + ("w" if writable else "") or "-"


def _type_name(node: ua.NodeId) -> str:
    if node.NamespaceIndex == 0 and isinstance(node.Identifier, int):
        return str(ua.ObjectIdNames.get(node.Identifier, node.to_string()))
    return node.to_string()


def render_tree(space: AddressSpace) -> str:
    lines = []
    for entry in space.entries:
        kind = entry.node_class.name
        detail = f"{entry.data_type} {entry.access}" if _is_variable(entry) else kind
        name = f"{entry.browse_name.NamespaceIndex}:{entry.browse_name.Name}"
        lines.append(f"{'  ' * entry.depth}{name}  ({entry.node_id.to_string()})  {detail}")
    return "\n".join(lines)


def render_points(space: AddressSpace) -> str:
    """``points:`` entries for every variable, named after their browse path."""
    used: set[str] = set()
    lines = ["points:"]
    for entry in space.entries:
        if not _is_variable(entry):
            continue
        name = _UNSAFE.sub("_", ".".join(entry.path)).strip("_.:-") or "point"
        if not name[0].isalnum():
            name = f"p{name}"
        unique, n = name, 2
        while unique in used:
            unique, n = f"{name}_{n}", n + 1
        used.add(unique)
        node = _portable(entry.node_id, space.namespaces)
        extra = f", data_type: {entry.data_type}" if entry.data_type in _SIM_TYPES else ""
        lines.append(f"  - {{name: {_quote(unique)}, node: {_quote(node)}{extra}}}")
    return "\n".join(lines)


_SIM_TYPES = set(typing.get_args(SimDataType))


def _portable(node: ua.NodeId, namespaces: list[str]) -> str:
    """``nsu=<uri>;...`` for non-standard namespaces (indexes may change between restarts)."""
    text = node.to_string()
    index = node.NamespaceIndex
    if index == 0 or index >= len(namespaces):
        return text
    identifier = text.split(";", 1)[1] if text.startswith("ns=") else text
    return f"nsu={namespaces[index]};{identifier}"


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
