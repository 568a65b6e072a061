"""Turn the map's node addresses into NodeIds on a connected server.

A point names its variable by node id (namespace by index, or by URI so a map survives a server
that renumbers its namespaces) or by browse path from the Root folder. Resolution is batched:
one read of the namespace array and one TranslateBrowsePaths call for all points of a device.
A point that does not resolve gets the status name as its reason and is retried later; it never
stops the others.
"""

from __future__ import annotations

from asyncua import Client, ua

from adapters.opcua.config import OpcUaPoint, split_browse_path

ROOT = ua.NodeId(ua.Int32(ua.ObjectIds.RootFolder))


def relative_path(text: str) -> ua.RelativePath:
    path = ua.RelativePath()
    for namespace, name in split_browse_path(text):
        element = ua.RelativePathElement()
        element.ReferenceTypeId = ua.NodeId(ua.Int32(ua.ObjectIds.HierarchicalReferences))
        element.IncludeSubtypes = True  # type: ignore[assignment]
        element.IsInverse = False  # type: ignore[assignment]
        element.TargetName = ua.QualifiedName(name, namespace)
        path.Elements.append(element)
    return path


def read_value_id(
    node: ua.NodeId, attribute: ua.AttributeIds = ua.AttributeIds.Value
) -> ua.ReadValueId:
    """What to read (or monitor) of a node. Browse and TranslateBrowsePaths answer with
    ExpandedNodeIds; requests take plain NodeIds, so the node is copied as one."""
    item = ua.ReadValueId()
    item.NodeId = ua.NodeId(node.Identifier, node.NamespaceIndex, node.NodeIdType)
    item.AttributeId = attribute
    return item


def parse_node_id(text: str, namespaces: list[str]) -> ua.NodeId | str:
    """The NodeId of ``text``, or the reason it cannot be one on this server."""
    if text.startswith("nsu="):
        uri, _, rest = text[4:].partition(";")
        if uri not in namespaces:
            return "BadNamespaceUnknown"
        expanded = ua.NodeId.from_string(rest)
        return ua.NodeId(expanded.Identifier, ua.Int16(namespaces.index(uri)), expanded.NodeIdType)
    return ua.NodeId.from_string(text)


async def resolve(
    client: Client, points: list[OpcUaPoint]
) -> tuple[dict[str, ua.NodeId], dict[str, str]]:
    """({point: NodeId} of the resolved points, {point: reason} of the others)."""
    resolved: dict[str, ua.NodeId] = {}
    failed: dict[str, str] = {}
    if any(p.node is not None and p.node.startswith("nsu=") for p in points):
        namespaces = await client.get_namespace_array()
    else:
        namespaces = []
    by_path: list[OpcUaPoint] = []
    for point in points:
        if point.node is None:
            by_path.append(point)
            continue
        node = parse_node_id(point.node, namespaces)
        if isinstance(node, str):
            failed[point.name] = node
        else:
            resolved[point.name] = node
    if by_path:
        paths = []
        for point in by_path:
            assert point.browse_path is not None  # the config guarantees node or browse_path
            browse = ua.BrowsePath()
            browse.StartingNode = ROOT
            browse.RelativePath = relative_path(point.browse_path)
            paths.append(browse)
        results = await client.uaclient.translate_browsepaths_to_nodeids(paths)
        for point, result in zip(by_path, results, strict=True):
            if result.StatusCode.is_good() and result.Targets:
                resolved[point.name] = result.Targets[0].TargetId
            else:
                failed[point.name] = result.StatusCode.name
    return resolved, failed
