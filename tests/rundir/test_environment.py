"""The environment record in a run's manifest: what it holds and when a new entry is added."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from sitefusion.config import load_config
from sitefusion.errors import ConfigError
from sitefusion.rundir import environment
from sitefusion.rundir.environment import (
    KERNEL_VARIABLES,
    PACKAGES,
    environment_info,
    pin_cpu_kernels,
    record_environment,
)

PINNED = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


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


def test_pin_cpu_kernels_sets_both_libraries_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PINNED:
        monkeypatch.delenv(name, raising=False)  # restored after the test
    monkeypatch.setattr(environment, "_cpu_capability", lambda: "AVX2")
    assert pin_cpu_kernels("avx2") == []
    assert environment_info()["kernel_variables"] == {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    }
    monkeypatch.setattr(environment, "_cpu_capability", lambda: "AVX512")
    for name in PINNED:
        monkeypatch.delenv(name)
    assert pin_cpu_kernels("avx512") == []
    assert environment_info()["kernel_variables"]["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE"


def test_pin_cpu_kernels_none_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PINNED:
        monkeypatch.delenv(name, raising=False)
    assert pin_cpu_kernels(None) == []
    assert not any(name in environment_info()["kernel_variables"] for name in PINNED)


def test_pin_cpu_kernels_refuses_a_conflicting_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    with pytest.raises(ConfigError) as err:
        pin_cpu_kernels("avx2", "configs/site.yaml")
    message = str(err.value)
    assert "configs/site.yaml" in message and "ONEDNN_MAX_CPU_ISA=SSE41" in message
    assert "'avx2'" in message
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")  # the same level, other case: accepted
    monkeypatch.setattr(environment, "_cpu_capability", lambda: "AVX2")
    assert pin_cpu_kernels("avx2") == []


def test_pin_cpu_kernels_warns_when_torch_runs_another_level(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in PINNED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(environment, "_cpu_capability", lambda: "AVX512")
    (warning,) = pin_cpu_kernels("avx2")
    assert "AVX512" in warning and "ATEN_CPU_CAPABILITY=avx2" in warning
    monkeypatch.setattr(environment, "_cpu_capability", lambda: "DEFAULT")  # a CPU without it
    assert len(pin_cpu_kernels("avx2")) == 1


def test_cpu_isa_config_accepts_only_known_levels(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  cpu_isa: sse2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "training.cpu_isa" in str(err.value) and "'avx2'" in str(err.value)
    path.write_text("training:\n  cpu_isa: avx2\n")
    assert load_config(path).training.cpu_isa == "avx2"


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
    reason="the CPU has no AVX2 kernels to pin to",
)
def test_pin_takes_effect_in_a_fresh_process() -> None:
    # The pin is set after torch is imported but before any kernel ran, as in `sitefusion train`.
    code = textwrap.dedent(
        """
        import os
        for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
            os.environ.pop(name, None)
        import torch
        from sitefusion.rundir.environment import pin_cpu_kernels
        warnings = pin_cpu_kernels("avx2")
        print(torch.backends.cpu.get_cpu_capability(), len(warnings))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["AVX2", "0"]
