"""Payloads as Flower messages, and the coordinator's transport over Flower's grid.

A :class:`~sitefusion.federated.payload.Payload` travels as one ``RecordDict``: ``meta`` (a
``ConfigRecord`` holding its JSON), ``tensors`` and ``files`` (``ArrayRecord``\\ s; a file is its
bytes as a ``uint8`` array). Messages go out with Flower's message type ``<kind>.<phase>``, so
the ClientApp routes each phase to its own handler (:mod:`sitefusion.workflows.federation.
flower_apps`). Flower starts a fresh ClientApp process per message, and replies arrive in any
order: the coordinator keys them by site and sums in site order. A Flower error is a
:class:`~sitefusion.federated.transport.SiteFailure` that says whether asking again can help:
a node or message that is unavailable is transient, an exception in the ClientApp is not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from rich.console import Console

from sitefusion.federated.payload import Payload
from sitefusion.federated.transport import HELLO, SiteFailure

__all__ = ["HELLO_TYPE", "FlowerTransport", "decode", "encode"]

#: The handshake's message type: a node answers it with its site's name.
HELLO_TYPE = f"query.{HELLO}"
_HELLO_TIMEOUT = 120.0
# Flower's error codes (flwr.common.constant.ErrorCode) after which asking again can help.
_TRANSIENT = {0, 3, 4, 5}  # unknown, message unavailable, reply unavailable, node unavailable


def encode(payload: Payload) -> RecordDict:
    """A :class:`Payload` as a Flower ``RecordDict``."""
    content = RecordDict()
    content["meta"] = ConfigRecord({"json": json.dumps(payload.meta)})
    if payload.tensors:
        content["tensors"] = ArrayRecord(
            torch_state_dict={k: v.detach().cpu().contiguous() for k, v in payload.tensors.items()}
        )
    if payload.files:
        content["files"] = ArrayRecord(
            torch_state_dict={
                k: torch.frombuffer(bytearray(v), dtype=torch.uint8)
                if v
                else torch.zeros(0, dtype=torch.uint8)
                for k, v in payload.files.items()
            }
        )
    return content


def decode(content: RecordDict) -> Payload:
    """The :class:`Payload` of a ``RecordDict`` made by :func:`encode`."""
    meta = json.loads(str(content["meta"]["json"]))  # type: ignore[index]
    tensors: dict[str, torch.Tensor] = {}
    files: dict[str, bytes] = {}
    if "tensors" in content:
        tensors = dict(content["tensors"].to_torch_state_dict())  # type: ignore[union-attr]
    if "files" in content:
        files = {
            k: v.numpy().tobytes()
            for k, v in content["files"].to_torch_state_dict().items()  # type: ignore[union-attr]
        }
    return Payload(meta, tensors, files)


class FlowerTransport:
    """The coordinator's :class:`~sitefusion.federated.transport.Transport` over Flower's grid.

    Nodes are anonymous to the SuperLink; a ``hello`` message asks each new node its site. A
    SuperNode that restarts comes back as a new node and is asked again.
    """

    def __init__(self, grid: Grid, console: Console | None = None) -> None:
        self.grid = grid
        self.console = console
        self.site_of: dict[int, str] = {}

    def _say(self, message: str) -> None:
        if self.console is not None:
            self.console.print(message)

    @staticmethod
    def _message(node: int, payload: Payload, message_type: str) -> Message:
        return Message(encode(payload), dst_node_id=node, message_type=message_type)

    def _refresh(self, timeout: float = _HELLO_TIMEOUT) -> None:
        """Ask every node not yet known which site it is (waiting at most ``timeout`` seconds);
        forget nodes that are gone."""
        nodes = set(self.grid.get_node_ids())
        for gone in set(self.site_of) - nodes:
            self._say(f"  node of site {self.site_of.pop(gone)} left the federation")
        new = sorted(nodes - set(self.site_of))
        if not new:
            return
        hello = [self._message(n, Payload({"phase": HELLO}), HELLO_TYPE) for n in new]
        for reply in self.grid.send_and_receive(hello, timeout=max(1.0, timeout)):
            if reply.has_error():
                continue
            name = str(decode(reply.content).meta.get("site"))
            self.site_of[reply.metadata.src_node_id] = name
            self._say(f"  site {name} connected")

    def _node(self, site: str) -> int | None:
        # The newest node of a site wins (a restarted SuperNode replaces its old node).
        nodes = [n for n, s in self.site_of.items() if s == site]
        return nodes[-1] if nodes else None

    def connect(self, min_sites: int, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            self._refresh(min(_HELLO_TIMEOUT, deadline - time.monotonic()))
            sites = sorted(set(self.site_of.values()))
            if len(sites) >= min_sites or time.monotonic() >= deadline:
                return sites
            time.sleep(1.0)

    def ask(
        self, payloads: Mapping[str, Payload], timeout: float, message_type: str
    ) -> dict[str, Payload | SiteFailure]:
        deadline = time.monotonic() + timeout
        self._refresh(min(_HELLO_TIMEOUT, timeout / 2))
        replies: dict[str, Payload | SiteFailure] = {}
        messages, site_of_node = [], {}
        for site, payload in payloads.items():
            node = self._node(site)
            if node is None:
                replies[site] = SiteFailure.lost("not connected")
                continue
            site_of_node[node] = site
            messages.append(self._message(node, payload, message_type))
        if messages:
            remaining = max(1.0, deadline - time.monotonic())
            for reply in self.grid.send_and_receive(messages, timeout=remaining):
                sender = site_of_node.get(reply.metadata.src_node_id)
                if sender is None:
                    continue
                if reply.has_error():
                    error = reply.error
                    transient = int(error.code) in _TRANSIENT
                    replies[sender] = SiteFailure(str(error.reason), transient=transient)
                else:
                    replies[sender] = decode(reply.content)
        for site in payloads:
            replies.setdefault(site, SiteFailure.lost(f"no reply within {timeout:.0f} s"))
        return replies
