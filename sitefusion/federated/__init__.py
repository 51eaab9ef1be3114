"""Federated sitefusion on Flower: experts and fusion trained where the data lives.

- :mod:`~sitefusion.federated.site`: what a site does with its own data, one phase per message;
- :mod:`~sitefusion.federated.coordinator`: the phases and rounds, deadlines, and the run
  directory the coordinator writes (it holds no data path);
- :mod:`~sitefusion.federated.payload`: what a message carries, and the audit log of them;
- :mod:`~sitefusion.federated.flower_app`: the Flower ServerApp and ClientApp around the two;
- :mod:`~sitefusion.federated.deploy`: SuperLink / SuperNode processes and ``flwr run``.
"""

from sitefusion.federated.coordinator import (
    FederationError,
    LocalTransport,
    SiteFailure,
    Transport,
    federate,
    federated_config,
)
from sitefusion.federated.payload import Payload, describe_payload
from sitefusion.federated.site import PHASES, SiteSetup, handle

__all__ = [
    "PHASES",
    "FederationError",
    "LocalTransport",
    "Payload",
    "SiteFailure",
    "SiteSetup",
    "Transport",
    "describe_payload",
    "federate",
    "federated_config",
    "handle",
]
