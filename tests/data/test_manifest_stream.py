"""The manifest read as a stream (issue 31, class 9): the same problems named the same way as
the row-by-row check, in a third of its memory; and classes taken from the labels are said
(class 10)."""

from __future__ import annotations

import csv
import os
import tracemalloc
from pathlib import Path

import pytest

from sitefusion.config import DataConfig
from sitefusion.data import load_manifest
from sitefusion.errors import ManifestError

HEADER = ["image_id", "image", "label", "site", "group"]


def write(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    images = tmp_path / "root" / "img"
    images.mkdir(parents=True)
    for k in range(3):
        (images / f"{k}.png").write_bytes(b"x")
    (images / "out.png").symlink_to("/etc/passwd")
    (images / "in.png").symlink_to(images / "0.png")
    os.mkfifo(images / "fifo.png")
    (tmp_path / "root" / "linked").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "outside.png").write_bytes(b"x")
    return tmp_path / "root"


def test_good_rows_give_records_with_their_paths(root: Path, tmp_path: Path) -> None:
    rows = [[f"i{k}", f"img/{k % 3}.png", "b" if k % 2 else "a", "s", f"g{k}"] for k in range(9)]
    rows.append(["i9", "img/in.png", "a", "s", "g9"])  # a link that stays in the root
    rows.append(["i10", "img/./sub/../1.png".replace("sub/../", ""), "a", "s", "g9"])
    m = load_manifest(write(tmp_path / "m.csv", rows), DataConfig(id="image_id"), image_root=root)
    assert [r.path for r in m] == [root / row[1] for row in rows]
    assert [r.row for r in m] == list(range(2, 13))
    assert m.classes == ("a", "b") and m.sites == ("s",) and m.classes_from_labels


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("img/out.png", "leads outside the image root"),
        ("linked/outside.png", "leads outside the image root"),
        ("img/../../outside.png", "leads outside the image root"),
        ("/etc/passwd", "leads outside the image root"),
        ("img/..", "is a folder"),  # the root itself
        ("img/fifo.png", "FIFO"),
        ("img/missing.png", "file does not exist"),
        ("img", "is a folder"),
    ],
)
def test_each_bad_path_is_named_as_before(
    root: Path, tmp_path: Path, image: str, expected: str
) -> None:
    rows = [["i0", "img/0.png", "a", "s", "g0"], ["i1", image, "a", "s", "g1"]]
    with pytest.raises(ManifestError) as err:
        load_manifest(write(tmp_path / "m.csv", rows), DataConfig(id="image_id"), image_root=root)
    message = str(err.value)
    assert "1 problem(s): row 3, column 'image'" in message and expected in message


def test_other_problems_and_their_rows(root: Path, tmp_path: Path) -> None:
    rows = [
        ["i0", "img/0.png", "a", "s", "g0"],
        ["i0", "img/1.png", "a", "s", "g0"],  # duplicate id
        ["i2", "img/1.png", "z", "s", "g0"],  # unknown label
        ["i3", "img/1.png", "a", "", "g0"],  # empty site
        ["i4", "img/1.png", "a", "s", ""],  # empty group
        ["i5", "img/1.png", "a, b", "s", "g5", "x"],  # an unquoted comma in the label
        ["i6", "", "a", "s", "g6"],
    ]
    with pytest.raises(ManifestError) as err:
        load_manifest(
            write(tmp_path / "m.csv", rows),
            DataConfig(id="image_id", classes=("a", "b")),
            image_root=root,
        )
    message = str(err.value)
    for part in (
        "6 problem(s)",
        "row 3, column 'image_id': duplicate id 'i0' (first on row 2)",
        "row 4, column 'label': unknown label 'z'",
        "row 5, column 'site': empty site",
        "row 6, column 'group': empty group",
        "row 7, column 'group': the row has 6 cells, the header 5",
        "row 8, column 'image': empty image path",
    ):
        assert part in message, message


def test_trailing_empty_cells_are_no_problem(root: Path, tmp_path: Path) -> None:
    rows = [["i0", "img/0.png", "a", "s", "g0", "", ""]]
    assert (
        len(
            load_manifest(
                write(tmp_path / "m.csv", rows), DataConfig(id="image_id"), image_root=root
            )
        )
        == 1
    )


def test_memory_per_row_is_a_third_of_the_old(root: Path, tmp_path: Path) -> None:
    n = 20_000
    rows = [
        [f"id{k:07d}", f"img/{k % 3}.png", f"c{k % 3}", f"s{k % 4}", f"g{k // 3}"] for k in range(n)
    ]
    path = write(tmp_path / "m.csv", rows)
    tracemalloc.start()
    try:
        manifest = load_manifest(path, DataConfig(id="image_id"), image_root=root)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(manifest) == n
    assert peak / n < 500, f"{peak / n:.0f} bytes per row (the whole file in memory was ~960)"
