"""Sparkplug B topics: ``spBv1.0/<group>/<TYPE>/<edge node>[/<device>]`` and the hosts'
``spBv1.0/STATE/<host id>``."""

from __future__ import annotations

NAMESPACE = "spBv1.0"


class SparkplugTopics:
    def __init__(self, group_id: str, edge_node_id: str) -> None:
        self.group_id, self.edge_node_id = group_id, edge_node_id
        self._node = f"{NAMESPACE}/{group_id}/{{}}/{edge_node_id}"

    def node(self, kind: str) -> str:
        """``NBIRTH``, ``NDEATH``, ``NDATA``, ``NCMD``."""
        return self._node.format(kind)

    def device(self, kind: str, device_id: str) -> str:
        """``DBIRTH``, ``DDEATH``, ``DDATA``, ``DCMD``."""
        return f"{self._node.format(kind)}/{device_id}"

    def device_commands(self) -> str:
        """The one subscription for every device's DCMD."""
        return f"{self._node.format('DCMD')}/+"

    def device_of_command(self, topic: str) -> str | None:
        prefix = f"{self._node.format('DCMD')}/"
        if not topic.startswith(prefix) or "/" in topic[len(prefix) :]:
            return None
        return topic[len(prefix) :] or None


def state_topic(host_id: str) -> str:
    return f"{NAMESPACE}/STATE/{host_id}"
