"""The Flower apps: a ServerApp that runs the coordinator, a ClientApp with one handler per phase.

Both are thin: the ServerApp reads its config path and output folder from the run config
(``flwr run ... --run-config 'config="..." out="..."'``) and runs
:func:`~sitefusion.workflows.federation.driver.federate` with a
:class:`~sitefusion.federated.flower.FlowerTransport` over Flower's grid. The ClientApp registers
one handler per registered phase under its Flower action (``@app.train("head_round")`` receives
messages of type ``train.head_round``), plus the ``query.hello`` handshake; each reads its site's
:class:`~sitefusion.federated.setup.SiteSetup` from the SuperNode's ``--node-config`` and answers
with :func:`~sitefusion.workflows.federation.site.handle`. A site's own error becomes a typed
error reply (the coordinator stops the phase with its message, without asking again); Flower's
``message_size_mod`` logs the size of what the site receives and sends in its own log.
This module is imported by Flower only (it needs ``flwr``); the app folder that names it is
shipped in the package (``sitefusion/federated/app``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import message_size_mod
from flwr.serverapp import Grid, ServerApp
from rich.console import Console

from sitefusion.config import load_config
from sitefusion.errors import FederationError, SiteFusionError
from sitefusion.federated.flower import FlowerTransport, decode, encode
from sitefusion.federated.messages import ErrorReply
from sitefusion.federated.setup import SiteSetup
from sitefusion.federated.transport import HELLO
from sitefusion.workflows.federation.driver import federate
from sitefusion.workflows.federation.registry import SITE_PHASES
from sitefusion.workflows.federation.site import handle

__all__ = ["client_app", "server_app"]

server_app = ServerApp()


@server_app.main()
def _server_main(grid: Grid, context: Context) -> None:
    console = Console(force_terminal=False, width=110)
    config = str(context.run_config.get("config", ""))
    out = str(context.run_config.get("out", ""))
    if not config or not out:
        raise FederationError("the run config needs 'config' (a YAML path) and 'out' (a folder)")
    try:
        cfg = load_config(Path(config))
        federate(cfg, out, FlowerTransport(grid, console), console=console)
    except SiteFusionError as err:
        # Said in the log the operator watches; raising marks Flower's run as failed.
        console.print(f"federated run failed: {err}", highlight=False, soft_wrap=True)
        raise
    console.print(f"federated run finished: {out}")


client_app = ClientApp(mods=[message_size_mod])


def _answer(message: Message, context: Context) -> Message:
    setup = SiteSetup.from_node_config(context.node_config)
    payload = decode(message.content)
    try:
        reply = handle(setup, payload)
    except SiteFusionError as err:
        phase = str(payload.meta.get("phase", ""))
        error = f"{type(err).__name__}: {err}"
        reply = ErrorReply(site=setup.site, phase=phase, error=error).to_payload()
    return Message(encode(reply), reply_to=message)


def _register(kind: str, action: str) -> None:
    decorator: Callable[[Callable[[Message, Context], Message]], object] = getattr(
        client_app, kind
    )(action)
    decorator(_answer)


_register("query", HELLO)
for _phase in SITE_PHASES.values():
    _register(_phase.kind, _phase.name)
