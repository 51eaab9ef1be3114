"""The environment record in a run's manifest: what it holds and when a new entry is added."""

from __future__ import annotations

import json

import torch

from sitefusion.rundir.environment import PACKAGES, environment_info, record_environment


def test_environment_info_names_versions_and_is_json() -> None:
    env = environment_info()
    assert set(env["packages"]) == set(PACKAGES)
    assert env["packages"]["torch"] == torch.__version__
    assert env["torch_threads"] == torch.get_num_threads()
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert json.loads(json.dumps(env)) == env  # stored in manifest.json as is


def test_record_environment_appends_only_changes() -> None:
    manifest: dict = {"artifacts": {}}
    first = {"python": "3.11.7", "packages": {"torch": "2.13.0"}}
    assert record_environment(manifest, first) is False  # a new run: not a change
    assert record_environment(manifest, dict(first)) is False  # resumed in the same place
    assert manifest["environments"] == [first]
    other = {"python": "3.11.7", "packages": {"torch": "2.14.1"}}
    assert record_environment(manifest, other) is True
    assert manifest["environments"] == [first, other]


def test_record_environment_replaces_a_malformed_history() -> None:
    manifest: dict = {"environments": "not a list"}
    assert record_environment(manifest, {"python": "3.11.7"}) is False
    assert manifest["environments"] == [{"python": "3.11.7"}]
