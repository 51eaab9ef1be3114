"""How a coordinator reaches the sites: the transport protocol and a site that did not answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from sitefusion.federated.payload import Payload

__all__ = ["SiteFailure", "Transport"]


@dataclass(frozen=True)
class SiteFailure:
    """A site that did not answer: ``reason`` is its error message or ``"no reply within N s"``."""

    reason: str


class Transport(Protocol):
    """How the coordinator reaches the sites."""

    def connect(self, min_sites: int, timeout: float) -> list[str]:
        """Wait until at least ``min_sites`` sites are connected (or ``timeout`` seconds) and
        return the connected sites' names."""

    def ask(
        self, payloads: Mapping[str, Payload], timeout: float
    ) -> dict[str, Payload | SiteFailure]:
        """Send one payload to each named site and wait up to ``timeout`` seconds for replies."""
