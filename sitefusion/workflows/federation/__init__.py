"""The federation as a workflow: the coordinator's driver, a site's side, the phases, the apps.

- :mod:`~sitefusion.workflows.federation.driver`: :func:`federate` (the registered phases in
  order over a transport, the run directory and the report), :func:`federated_config`,
  :class:`LocalTransport` (the sites as function calls);
- :mod:`~sitefusion.workflows.federation.site`: :func:`handle` (one message at a site) and the
  site's view of its own data;
- :mod:`~sitefusion.workflows.federation.registry`: every phase, in order;
- one module per phase that is not a method's own (``prepare``, ``expert``, ``ood``,
  ``evaluate``); the FedAvg and fusion phases live with their methods
  (:mod:`sitefusion.methods.fedavg`, :mod:`sitefusion.methods.federated_fusion`);
- :mod:`~sitefusion.workflows.federation.flower_apps`: the Flower ServerApp and ClientApp
  (imported by Flower only: it needs ``flwr``).
"""

from sitefusion.workflows.federation.driver import LocalTransport, federate, federated_config
from sitefusion.workflows.federation.prepare import reconcile_groups
from sitefusion.workflows.federation.registry import PHASES, SITE_PHASES, coordinator_steps
from sitefusion.workflows.federation.site import handle

__all__ = [
    "PHASES",
    "SITE_PHASES",
    "LocalTransport",
    "coordinator_steps",
    "federate",
    "federated_config",
    "handle",
    "reconcile_groups",
]
