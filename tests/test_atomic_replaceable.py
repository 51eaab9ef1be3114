"""``write_bytes_replaceable``: the review thumbnails' cheap atomic write."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from sitefusion.atomic import write_bytes_replaceable


@pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")
def test_the_file_gets_the_umask_permissions_and_no_temporary_file_stays(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        path = write_bytes_replaceable(tmp_path / "thumbs" / "a.png", b"\x89PNG one")
    finally:
        os.umask(previous)
    assert path.read_bytes() == b"\x89PNG one"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0666 less the umask, as open() gives
    assert [p.name for p in path.parent.iterdir()] == ["a.png"]


def test_a_stale_temporary_file_of_a_crash_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "b.png"
    stale = tmp_path / f".b.png.{os.getpid()}-{threading.get_ident()}.tmp"
    stale.write_bytes(b"half a picture from before a crash")
    write_bytes_replaceable(target, b"whole")
    assert target.read_bytes() == b"whole" and not stale.exists()


def test_a_failed_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "c.png"
    target.write_bytes(b"old")

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        write_bytes_replaceable(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png"]
