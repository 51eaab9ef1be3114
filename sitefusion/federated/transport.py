"""How a coordinator reaches the sites: the transport protocol, and a site that did not answer.

A failure says whether asking again can help: ``transient`` (no reply within the deadline, the
node is gone, the message was lost) or not (the site's own error, such as a damaged image or a
refused message: the phase stops with its message, and a rerun resumes once it is fixed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from sitefusion.federated.payload import Payload

__all__ = ["HELLO", "SiteFailure", "Transport"]

#: The one message below the phases: a transport asks each new node which site it is.
HELLO = "hello"


@dataclass(frozen=True)
class SiteFailure:
    """A site that did not answer with a reply: ``reason`` in one line, and whether asking
    again may help (``transient``)."""

    reason: str
    transient: bool = True

    @classmethod
    def lost(cls, reason: str) -> SiteFailure:
        """No reply: a deadline, a lost connection, a node that left (asked again)."""
        return cls(reason, transient=True)

    @classmethod
    def error(cls, reason: str) -> SiteFailure:
        """The site's own error, or a reply the coordinator refused (not asked again)."""
        return cls(reason, transient=False)


class Transport(Protocol):
    """How the coordinator reaches the sites."""

    def connect(self, min_sites: int, timeout: float) -> list[str]:
        """Wait until at least ``min_sites`` sites are connected (or ``timeout`` seconds) and
        return the connected sites' names."""

    def ask(
        self, payloads: Mapping[str, Payload], timeout: float, message_type: str
    ) -> dict[str, Payload | SiteFailure]:
        """Send one payload to each named site as a message of ``message_type`` (Flower's
        ``<kind>.<phase>``) and wait up to ``timeout`` seconds for the replies."""
