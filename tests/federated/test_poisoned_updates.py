"""A poisoned site cannot poison the global model: each bad update is refused by name.

The site runs its real handler (:func:`sitefusion.workflows.federation.site.handle`); what it
sends back is then damaged the way a buggy or hostile site would damage it, and travels as an
encoded payload into the coordinator, which decodes it, checks it and leaves the site out of that
round. One federation of three sites carries one kind of poison per round (four head rounds and
four FedAvg rounds), and finishes with the two honest sites.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch

from sitefusion.config import Config, replace
from sitefusion.federated import Payload, SiteFailure, SiteSetup
from sitefusion.rundir import RunDir
from sitefusion.workflows import LocalTransport, federate

pytestmark = pytest.mark.slow


def _first_float(payload: Payload) -> str:
    return next(k for k, v in sorted(payload.tensors.items()) if v.is_floating_point())


def _nan(p: Payload) -> None:
    name = _first_float(p)
    tensor = p.tensors[name].clone()
    tensor.view(-1)[0] = float("nan")
    p.tensors[name] = tensor


def _inf(p: Payload) -> None:
    name = _first_float(p)
    p.tensors[name] = torch.full_like(p.tensors[name], float("inf"))


def _shape(p: Payload) -> None:
    name = _first_float(p)
    p.tensors[name] = torch.zeros(p.tensors[name].numel() + 1)


def _dtype(p: Payload) -> None:
    name = _first_float(p)
    p.tensors[name] = p.tensors[name].double()


def _negative(p: Payload) -> None:
    p.meta["examples"] = -5


def _huge(p: Payload) -> None:
    p.meta["examples"] = 10**12


def _renamed(p: Payload) -> None:
    name = _first_float(p)
    p.tensors[name + "_x"] = p.tensors.pop(name)


def _scaled(p: Payload) -> None:
    """Weights a thousand times the honest ones: finite, right shape, far too large a step."""
    for name, tensor in p.tensors.items():
        if tensor.is_floating_point():
            p.tensors[name] = tensor * 1000.0


#: One poison per round, in order: head rounds 1-4, then FedAvg rounds 1-4.
POISONS: list[tuple[str, Callable[[Payload], None], str]] = [
    ("nan", _nan, r"non-finite value"),
    ("inf", _inf, r"non-finite value"),
    ("shape", _shape, r"has shape \(\d+,\); the global model's is"),
    ("dtype", _dtype, r"has dtype torch\.float64; the global model's is torch\.float32"),
    ("negative", _negative, r"example count -5 is outside 1\.\.\d+"),
    ("huge", _huge, r"example count 1000000000000 is outside 1\.\.\d+"),
    ("renamed", _renamed, r"other tensor names \(missing .*; unexpected .*_x\)"),
    ("scaled", _scaled, r"its size is [\d.]+ times the round's median"),
]


class _Poisoned(LocalTransport):
    """Site ``bad`` answers every round with its real update, then damages it: the ``r``-th
    round of averaging (head and FedAvg rounds counted together) with ``POISONS[r]``."""

    def __init__(self, setups: list[SiteSetup], bad: str) -> None:
        super().__init__(setups)
        self.bad, self.rounds = bad, 0

    def ask(
        self, payloads: Mapping[str, Payload], timeout: float, message_type: str
    ) -> dict[str, Payload | SiteFailure]:
        replies = super().ask(payloads, timeout, message_type)
        if message_type in ("train.head_round", "train.fedavg_round"):
            reply = replies[self.bad]
            assert isinstance(reply, Payload), reply  # the honest handler answered
            POISONS[self.rounds][1](reply)
            self.rounds += 1
        return replies


def test_every_kind_of_poisoned_update_is_refused_by_name_and_the_run_finishes(
    federated_cfg: Config, site_setups: list[SiteSetup], tmp_path: Path
) -> None:
    from rich.console import Console

    cfg = replace(
        federated_cfg,
        federated=replace(federated_cfg.federated, head_rounds=4, fedavg_rounds=4, min_sites=2),
    )
    out = tmp_path / "run"
    console = Console(record=True, width=400)
    transport = _Poisoned(site_setups, "site_b")
    federate(cfg, out, transport, console=console, evaluate=False)

    assert transport.rounds == len(POISONS)
    lines = [line for line in console.export_text().splitlines() if "left out" in line]
    assert len(lines) == len(POISONS), lines
    for (kind, _, pattern), line in zip(POISONS, lines, strict=True):
        assert "site site_b left out (update refused: " in line, (kind, line)
        assert re.search(pattern, line), (kind, line)
        assert "averaging over 2 site(s)" in line, (kind, line)

    run = RunDir(out)
    assert run.read_manifest()["status"] == "complete"
    head = run.read_json("fusion/fusion.json")["federated"]["history"]
    fedavg = run.read_json("baselines/fedavg.json")["history"]
    for history in (head, fedavg):
        assert len(history) == 4
        assert all(set(r) == {"site_a", "site_c"} for r in history)
    # The global models stayed finite: nothing of site_b's updates was averaged in.
    for rel in ("fusion/fusion.safetensors", "baselines/fedavg.safetensors"):
        for name, tensor in run.read_tensors(rel).items():
            if tensor.is_floating_point():
                assert torch.isfinite(tensor).all(), (rel, name)
