"""The environment record in a run's manifest: what it holds and when a new entry is added."""

from __future__ import annotations

import json

import pytest
import torch

from sitefusion.rundir.environment import (
    KERNEL_VARIABLES,
    PACKAGES,
    environment_info,
    record_environment,
)


def test_environment_info_names_versions_and_is_json() -> None:
    env = environment_info()
    assert set(env["packages"]) == set(PACKAGES)
    assert env["packages"]["torch"] == torch.__version__
    assert env["torch_threads"] == torch.get_num_threads()
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert json.loads(json.dumps(env)) == env  # stored in manifest.json as is


def test_environment_info_records_only_the_kernel_variables_that_are_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in KERNEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert environment_info()["kernel_variables"] == {}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("SITEFUSION_UNRELATED", "1")
    assert environment_info()["kernel_variables"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}


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
