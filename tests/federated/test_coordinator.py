"""The generic coordinator's parts on their own: the typed messages, the checks of an update, the
size ratios, and how a phase answers a site that is away (asked again) or in error (stopped)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from sitefusion.config import Config, replace
from sitefusion.errors import FederationError
from sitefusion.federated import Payload, SiteFailure
from sitefusion.federated.coordinator import Coordinator
from sitefusion.federated.messages import Reply, Request, RoundReply
from sitefusion.federated.phase import OncePhase
from sitefusion.federated.updates import check_update, update_norm_ratios
from sitefusion.rundir import RunDir

GLOBAL = {"w": torch.zeros(3, 2), "b": torch.zeros(2), "steps": torch.zeros((), dtype=torch.long)}


def _reply(**changes: Any) -> RoundReply:
    weights = {k: v.clone() for k, v in GLOBAL.items()}
    weights.update(changes.pop("weights", {}))
    fields: dict[str, Any] = {"site": "site_a", "examples": 10, "loss": 0.5, "weights": weights}
    fields.update(changes)
    return RoundReply(**fields)


# -- messages ------------------------------------------------------------------------------------
def test_a_reply_travels_as_a_payload_and_comes_back_equal() -> None:
    reply = _reply(weights={"w": torch.ones(3, 2)})
    payload = reply.to_payload()
    assert set(payload.tensors) == {"weights.w", "weights.b", "weights.steps"}
    assert payload.meta == {"site": "site_a", "phase": "", "examples": 10, "loss": 0.5}
    back = RoundReply.from_payload(payload, "test")
    assert back.examples == 10 and torch.equal(back.weights["w"], torch.ones(3, 2))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.meta.pop("examples"), r"field 'examples': Field required"),
        (lambda p: p.meta.update(examples="10"), r"field 'examples': Input should be a valid int"),
        (lambda p: p.meta.update(sample_size=3), r"field 'sample_size': Extra inputs"),
        (lambda p: p.tensors.update(extra=torch.zeros(1)), r"tensor 'extra' is not part of"),
        (lambda p: p.files.update({"x.json": b"{}"}), r"RoundReply carries no files"),
    ],
)
def test_a_malformed_message_is_refused_naming_the_sender_and_the_field(
    damage: Any, message: str
) -> None:
    payload = _reply().to_payload()
    damage(payload)
    with pytest.raises(FederationError, match=rf"phase x: the reply of site_a: .*{message}"):
        RoundReply.from_payload(payload, "phase x: the reply of site_a")


def test_a_request_refuses_a_run_id_that_is_not_one() -> None:
    payload = Payload(meta={"phase": "p", "run_id": "../../etc", "config": {}, "sites": []})
    with pytest.raises(FederationError, match=r"field 'run_id'"):
        Request.from_payload(payload, "coordinator message")


# -- update checks -------------------------------------------------------------------------------
def test_an_honest_update_passes() -> None:
    assert check_update(_reply(weights={"w": torch.randn(3, 2)}), GLOBAL, max_examples=10) is None


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (_reply(weights={"w": torch.full((3, 2), float("nan"))}), "'w' has 6 non-finite"),
        (_reply(weights={"b": torch.tensor([0.0, float("-inf")])}), "'b' has 1 non-finite"),
        (
            _reply(weights={"w": torch.zeros(2, 3)}),
            "'w' has shape (2, 3); the global model's is (3, 2)",
        ),
        (_reply(weights={"b": torch.zeros(2, dtype=torch.float16)}), "'b' has dtype torch.float16"),
        (_reply(weights={"steps": torch.zeros(())}), "'steps' has dtype torch.float32"),
        (_reply(examples=0), "example count 0 is outside 1..10"),
        (_reply(examples=-1), "example count -1 is outside 1..10"),
        (_reply(examples=11), "example count 11 is outside 1..10"),
        (_reply(loss=float("nan")), "its loss is nan"),
    ],
)
def test_a_bad_update_is_refused_with_its_reason(reply: RoundReply, why: str) -> None:
    refused = check_update(reply, GLOBAL, max_examples=10)
    assert refused is not None and why in refused


def test_other_tensor_names_are_refused_naming_them() -> None:
    weights = {"w": torch.zeros(3, 2), "steps": torch.zeros((), dtype=torch.long)}
    reply = RoundReply(site="s", examples=1, loss=0.0, weights={**weights, "b2": torch.zeros(2)})
    refused = check_update(reply, GLOBAL, max_examples=10)
    assert refused == "its weights have other tensor names (missing b; unexpected b2)"


def test_update_sizes_are_reported_relative_to_the_median() -> None:
    replies = {
        s: _reply(site=s, weights={"w": torch.full((3, 2), step)})
        for s, step in (("a", 1.0), ("b", 2.0), ("c", 40.0))
    }
    ratios = update_norm_ratios(replies, GLOBAL)
    assert ratios == pytest.approx({"a": 0.5, "b": 1.0, "c": 20.0})
    # No site moved: every ratio is 1 rather than a division by zero.
    still = {s: _reply(site=s) for s in ("a", "b")}
    assert update_norm_ratios(still, GLOBAL) == {"a": 1.0, "b": 1.0}


# -- a phase every site answers once -------------------------------------------------------------
class _Probe(OncePhase[Request, Reply]):
    name = "probe"
    request_type = Request
    reply_type = Reply

    def done(self, co: Coordinator) -> bool:
        return False

    def request(self, co: Coordinator, site: str) -> Request:
        return Request(**co.fields(self))

    def combine(self, co: Coordinator, replies: dict[str, Reply]) -> None:
        co.memory["probe"] = sorted(replies)


class _Scripted:
    """Each site answers with the failures scripted for it, in order, then with a reply."""

    def __init__(self, script: Mapping[str, list[SiteFailure]]) -> None:
        self.script = {s: list(f) for s, f in script.items()}
        self.asked: list[list[str]] = []

    def connect(self, min_sites: int, timeout: float) -> list[str]:
        return sorted(self.script)

    def ask(
        self, payloads: Mapping[str, Payload], timeout: float, message_type: str
    ) -> dict[str, Payload | SiteFailure]:
        assert message_type == "train.probe"
        self.asked.append(sorted(payloads))
        replies: dict[str, Payload | SiteFailure] = {}
        for site in payloads:
            failures = self.script[site]
            replies[site] = failures.pop(0) if failures else Reply(site=site).to_payload()
        return replies


def _coordinator(cfg: Config, tmp_path: Path, transport: _Scripted) -> Coordinator:
    cfg = replace(cfg, federated=replace(cfg.federated, round_timeout=60.0, min_sites=2))
    co = Coordinator(cfg, RunDir(tmp_path / "run"), transport, run_id="abcdef12", num_classes=3)
    co.connect()
    return co


def test_a_site_that_is_away_is_asked_again_until_it_answers(
    federated_cfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sitefusion.federated.coordinator.time.sleep", lambda s: None)
    lost = SiteFailure.lost("no reply within 60 s")
    transport = _Scripted({"site_a": [], "site_b": [lost, lost]})
    co = _coordinator(federated_cfg, tmp_path, transport)
    co.run_phase(_Probe())
    assert co.memory["probe"] == ["site_a", "site_b"]
    # The site that answered is not asked again; the one that was away is, twice more.
    assert transport.asked == [["site_a", "site_b"], ["site_b"], ["site_b"]]


def test_a_site_error_stops_the_phase_at_once_with_its_message(
    federated_cfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sitefusion.federated.coordinator.time.sleep", lambda s: None)
    error = SiteFailure.error("DataError: images/x.png: not a PNG file")
    transport = _Scripted({"site_a": [], "site_b": [error]})
    co = _coordinator(federated_cfg, tmp_path, transport)
    with pytest.raises(FederationError, match=r"phase probe: 1 site\(s\).*site_b: DataError: "):
        co.run_phase(_Probe())
    assert transport.asked == [["site_a", "site_b"]]  # not asked again
