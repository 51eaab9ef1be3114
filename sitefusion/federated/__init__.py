"""Federation plumbing below the methods: what travels, how, and the generic coordinator.

- :mod:`~sitefusion.federated.payload`: what a message carries, and its audit description;
- :mod:`~sitefusion.federated.messages`: typed requests and replies, validated on both ends;
- :mod:`~sitefusion.federated.phase`: a phase (once, or rounds of federated averaging);
- :mod:`~sitefusion.federated.coordinator`: the generic coordinator (asking, deadlines, the one
  loop of rounds with resume and checkpoints), and the in-process transport;
- :mod:`~sitefusion.federated.updates`: the checks of a site's update before it is averaged;
- :mod:`~sitefusion.federated.setup`: a site's own settings (local paths that never travel);
- :mod:`~sitefusion.federated.transport`: how a coordinator reaches the sites (protocol);
- :mod:`~sitefusion.federated.flower`: payloads as Flower messages, the transport over Flower's
  grid (needs ``flwr``; imported on its own);
- :mod:`~sitefusion.federated.deploy`: SuperLink / SuperNode processes and ``flwr run``.

Which phases a federation runs, and what each does with a site's data, is above: the methods
that train federatedly own their phases (:mod:`sitefusion.methods.fedavg`,
:mod:`sitefusion.methods.federated_fusion`), and :mod:`sitefusion.workflows.federation` holds the
others, the order, a site's side and the Flower apps.
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
