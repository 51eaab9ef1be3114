"""Federation plumbing below the workflows: what travels and how it travels.

- :mod:`~sitefusion.federated.payload`: what a message carries, and the audit log of them;
- :mod:`~sitefusion.federated.setup`: a site's own settings (local paths that never travel);
- :mod:`~sitefusion.federated.transport`: how a coordinator reaches the sites (protocol);
- :mod:`~sitefusion.federated.flower`: payloads as Flower messages, the transport over Flower's
  grid (needs ``flwr``; imported on its own);
- :mod:`~sitefusion.federated.deploy`: SuperLink / SuperNode processes and ``flwr run``.

What the sites and the coordinator *do* is a workflow: :mod:`sitefusion.workflows.federate`
(the coordinator), :mod:`sitefusion.workflows.federated_site` (a site's phases) and
:mod:`sitefusion.workflows.flower_apps` (the ServerApp and ClientApp).
"""

from sitefusion.federated.payload import Payload, describe_payload
from sitefusion.federated.setup import SiteSetup, write_group_key
from sitefusion.federated.transport import SiteFailure, Transport

__all__ = [
    "Payload",
    "SiteFailure",
    "SiteSetup",
    "Transport",
    "describe_payload",
    "write_group_key",
]
