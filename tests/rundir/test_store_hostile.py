"""A run directory someone tampered with or built to hurt (issue 31, classes 3, 4, 5, 10): each
problem is one ArtifactError naming the file, at once, and what a run writes is readable by
other users of the machine."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sitefusion.errors import ArtifactError, OutputFolderError
from sitefusion.rundir import RunDir


def test_a_manifest_nested_100000_deep_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ArtifactError, match=r"manifest\.json"):
        RunDir(tmp_path).read_manifest()


def test_a_recorded_json_nested_deep_is_one_error(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    path = run.write_json("a.json", {"x": 1})
    path.write_text("[" * 100_000 + "]" * 100_000)
    run.adopt("a.json")
    with pytest.raises(ArtifactError, match=r"a\.json"):
        run.read_json("a.json")


VERIFY = """
import sys
from sitefusion.errors import ArtifactError
from sitefusion.rundir import RunDir
try:
    RunDir(sys.argv[1]).{call}
except ArtifactError as err:
    print("REFUSED", err)
"""


@pytest.mark.parametrize(
    ("target", "call"),
    [
        ("config.yaml", "verify('config.yaml')"),
        ("config.yaml", "verify_all()"),
        ("manifest.json", "read_manifest()"),
    ],
)
def test_an_artifact_linked_to_dev_zero_is_refused_not_hashed(
    tmp_path: Path, target: str, call: str
) -> None:
    run = RunDir(tmp_path)
    run.write_text("config.yaml", "name: x\n")
    (tmp_path / target).unlink()
    (tmp_path / target).symlink_to("/dev/zero")
    done = subprocess.run(
        [sys.executable, "-c", VERIFY.replace("{call}", call), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,  # hashing /dev/zero never ends: a timeout here is the bug
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert "REFUSED" in done.stdout, done.stdout + done.stderr
    assert target in done.stdout and "not a regular file" in done.stdout


def test_a_fifo_artifact_is_refused(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.write_text("splits.csv", "id\n")
    (tmp_path / "splits.csv").unlink()
    os.mkfifo(tmp_path / "splits.csv")
    with pytest.raises(ArtifactError, match="FIFO"):
        run.verify("splits.csv")


def test_run_files_are_readable_by_others_and_folders_listable(tmp_path: Path) -> None:
    old = os.umask(0o077)  # the strictest usual umask must not make a run unreadable to others
    try:
        run = RunDir(tmp_path / "run")
        run.write_json("fusion/a.json", {"x": 1})
        run.write_text("config.yaml", "name: x\n")
        run.write_bytes("normalizers/b.json", b"{}")
        run.set_info(status="complete")
    finally:
        os.umask(old)
    import torch

    run.write_tensors("experts/e.safetensors", {"w": torch.zeros(2)})
    for rel in (
        "fusion/a.json",
        "config.yaml",
        "normalizers/b.json",
        "manifest.json",
        "experts/e.safetensors",
    ):
        assert stat.S_IMODE((run.root / rel).stat().st_mode) == 0o644, rel
    for folder in (run.root / "fusion", run.root / "normalizers", run.root / "experts"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
    # the run folder itself keeps the umask it was made under: it is what keeps a run private
    assert stat.S_IMODE(run.root.stat().st_mode) == 0o700


@pytest.mark.parametrize("inner", ["", "scores", "a/b/../c"])
def test_an_output_folder_inside_the_run_is_refused(tmp_path: Path, inner: str) -> None:
    run = RunDir(tmp_path / "run")
    run.write_text("config.yaml", "name: x\n")
    with pytest.raises(OutputFolderError, match="inside the run directory"):
        run.refuse_output_inside(run.root / inner, "output folder")
    link = tmp_path / "link"
    link.symlink_to(run.root, target_is_directory=True)
    with pytest.raises(OutputFolderError, match="inside the run directory"):
        run.refuse_output_inside(link / "x", "output folder")
    run.refuse_output_inside(tmp_path / "elsewhere", "output folder")
    run.refuse_output_inside(tmp_path / "run2", "output folder")  # a sibling with the same prefix


def test_a_report_may_be_a_folder_of_its_own_inside_the_run(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.write_json("fusion/fusion.json", {})
    run.refuse_output_inside(run.root / "report", "report folder", report=True)
    with pytest.raises(OutputFolderError, match="inside the run directory"):
        run.refuse_output_inside(run.root, "report folder", report=True)
    with pytest.raises(OutputFolderError, match="among the run's own artifacts"):
        run.refuse_output_inside(run.root / "fusion" / "r", "report folder", report=True)
    with pytest.raises(OutputFolderError, match="inside the run directory"):
        run.refuse_output_inside(run.root / "report", "output folder")  # scoring: never
