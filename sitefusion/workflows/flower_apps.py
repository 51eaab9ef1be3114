"""The Flower apps: a ServerApp that runs the coordinator, a ClientApp that runs a site's phase.

Both are thin: the ServerApp reads its config path and output folder from the run config
(``flwr run ... --run-config 'config="..." out="..."'``) and runs
:func:`~sitefusion.workflows.federate.federate` with a
:class:`~sitefusion.federated.flower.FlowerTransport` over Flower's grid; the ClientApp reads its
site's :class:`~sitefusion.federated.setup.SiteSetup` from the SuperNode's ``--node-config`` and
answers one message with :func:`~sitefusion.workflows.federated_site.handle`.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from rich.console import Console

from sitefusion.config import load_config
from sitefusion.errors import FederationError, SiteFusionError
from sitefusion.federated.flower import FlowerTransport, decode, encode
from sitefusion.federated.setup import SiteSetup
from sitefusion.workflows.federate import federate
from sitefusion.workflows.federated_site import handle

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


client_app = ClientApp()


def _answer(message: Message, context: Context) -> Message:
    setup = SiteSetup.from_node_config(context.node_config)
    reply = handle(setup, decode(message.content))
    return Message(encode(reply), reply_to=message)


@client_app.query()
def _query(message: Message, context: Context) -> Message:
    return _answer(message, context)


@client_app.train()
def _train(message: Message, context: Context) -> Message:
    return _answer(message, context)


@client_app.evaluate()
def _evaluate(message: Message, context: Context) -> Message:
    return _answer(message, context)
