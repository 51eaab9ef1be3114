from __future__ import annotations

import csv
from pathlib import Path

import pytest

from sitefusion.config import DataConfig
from sitefusion.data import load_manifest
from sitefusion.errors import ManifestError

MAPPING = DataConfig(
    image="images/{image_id}.png", label="dx", site="site", group="lesion_id", id="image_id"
)


def make(tmp_path: Path, rows: list[dict[str, str]], files: bool = True) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    for r in rows:
        if files and r.get("image_id"):
            (tmp_path / "images" / f"{r['image_id']}.png").write_bytes(b"x")
    path = tmp_path / "m.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image_id", "lesion_id", "site", "dx"])
        w.writeheader()
        w.writerows(rows)
    return path


def row(i: int, site: str = "a", dx: str = "nv", lesion: str | None = None) -> dict[str, str]:
    return {"image_id": f"img{i}", "lesion_id": lesion or f"les{i}", "site": site, "dx": dx}


def test_template_and_classes(tmp_path: Path) -> None:
    path = make(tmp_path, [row(1), row(2, "b", "mel"), row(3, "b", "nv", "les1")])
    m = load_manifest(path, MAPPING)
    assert m.classes == ("mel", "nv") and m.sites == ("a", "b")
    assert m.records[0].path == tmp_path / "images" / "img1.png"
    assert m.records[2].group == "les1"
    assert m.label_index(m.records[1]) == 0


def test_missing_file_names_row_and_column(tmp_path: Path) -> None:
    path = make(tmp_path, [row(1), row(2)])
    (tmp_path / "images" / "img2.png").unlink()
    with pytest.raises(ManifestError) as err:
        load_manifest(path, MAPPING)
    msg = str(err.value)
    assert (
        str(path) in msg
        and "row 3" in msg
        and "images/{image_id}.png" in msg
        and "does not exist" in msg
    )


def test_unknown_label(tmp_path: Path) -> None:
    path = make(tmp_path, [row(1, dx="melanoma")])
    with pytest.raises(
        ManifestError, match=r"row 2.*'dx'.*unknown label 'melanoma'.*did you mean 'mel'"
    ):
        load_manifest(path, MAPPING, classes=["mel", "nv"])


def test_empty_site_and_duplicate_id(tmp_path: Path) -> None:
    path = make(tmp_path, [row(1), row(2, site=""), row(1)])
    with pytest.raises(ManifestError) as err:
        load_manifest(path, MAPPING)
    msg = str(err.value)
    assert "row 3, column 'site': empty site" in msg
    assert "row 4, column 'image_id': duplicate id 'img1' (first on row 2)" in msg


def test_missing_column_suggests(tmp_path: Path) -> None:
    path = make(tmp_path, [row(1)])
    cfg = DataConfig(
        image="images/{image_id}.png", label="diagnosis", site="site", group="lesion_id"
    )
    with pytest.raises(ManifestError, match="no column 'diagnosis'"):
        load_manifest(path, cfg)


def test_unlabelled_allowed_for_scoring(tmp_path: Path) -> None:
    path = make(tmp_path, [row(1, dx="")])
    with pytest.raises(ManifestError, match="empty label"):
        load_manifest(path, MAPPING)
    m = load_manifest(path, MAPPING, require_labels=False, classes=["mel", "nv"])
    assert m.records[0].label is None


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "nope.csv", MAPPING)


# -- hostile manifests (issue 23: 16, and the FIFO line) ---------------------------------------

PLAIN = DataConfig(image="path", label="dx", site="site", group="lesion_id", id="image_id")


def _plain(tmp_path: Path, paths: list[str]) -> Path:
    path = tmp_path / "root" / "m.csv"
    path.parent.mkdir(exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image_id", "path", "lesion_id", "site", "dx"])
        w.writeheader()
        w.writerows(
            {"image_id": f"i{k}", "path": p, "lesion_id": f"l{k}", "site": "a", "dx": "nv"}
            for k, p in enumerate(paths)
        )
    return path


def test_image_paths_outside_the_root_are_refused_by_row(tmp_path: Path) -> None:
    """Before: '../../etc/passwd' and absolute paths were followed silently."""
    manifest = _plain(tmp_path, ["../../etc/passwd", "/etc/passwd", "inside.png", "link.png"])
    (tmp_path / "root" / "inside.png").write_bytes(b"x")
    (tmp_path / "root" / "link.png").symlink_to("/etc/passwd")
    with pytest.raises(ManifestError) as err:
        load_manifest(manifest, PLAIN)
    message = str(err.value)
    assert "3 problem(s)" in message
    for row_no, rel in ((2, "../../etc/passwd"), (3, "/etc/passwd"), (5, "link.png")):
        assert f"row {row_no}, column 'path': image path {rel!r} leads outside the image root" in (
            message
        )
    allowed = load_manifest(manifest, PLAIN, allow_outside_root=True, check_files=False)
    assert [r.path.name for r in allowed.records] == ["passwd", "passwd", "inside.png", "link.png"]


def test_a_fifo_in_a_manifest_is_reported_as_what_it_is(tmp_path: Path) -> None:
    import os

    manifest = _plain(tmp_path, ["pipe.png"])
    os.mkfifo(tmp_path / "root" / "pipe.png")
    with pytest.raises(ManifestError, match=r"not a regular file \(a FIFO \(named pipe\)\)"):
        load_manifest(manifest, PLAIN)


def test_split_manifest_by_site_gives_each_site_only_its_rows(tmp_path: Path) -> None:
    from sitefusion.data import split_manifest_by_site

    src = tmp_path / "m.csv"
    src.write_text("image_id,site,label\na1,A,x\nb1,B,y\na2,A,y\n", encoding="utf-8")
    out = split_manifest_by_site(src, tmp_path / "sites")
    assert sorted(out) == ["A", "B"]
    assert out["A"].read_text(encoding="utf-8").splitlines() == [
        "image_id,site,label",
        "a1,A,x",
        "a2,A,y",
    ]
    assert out["B"].read_text(encoding="utf-8").splitlines() == ["image_id,site,label", "b1,B,y"]


def test_split_manifest_by_site_escapes_formula_cells_and_loads_them_back(
    tmp_path: Path,
) -> None:
    """Issue 31, class 7: the per-site manifests copied a formula id unescaped."""
    from sitefusion.data import split_manifest_by_site

    root = tmp_path / "root"
    root.mkdir()
    (root / "a.png").write_bytes(b"x")
    src = root / "m.csv"
    src.write_text(
        "image_id,path,dx,site,lesion_id\n\"=cmd|' /C calc'!A0\",a.png,x,A,@g\n", encoding="utf-8"
    )
    out = split_manifest_by_site(src, tmp_path / "sites")
    text = out["A"].read_text(encoding="utf-8")
    assert "'=cmd" in text and ",'@g" in text
    loaded = load_manifest(out["A"], PLAIN, image_root=root)
    assert [(r.id, r.group) for r in loaded.records] == [("=cmd|' /C calc'!A0", "@g")]
