"""Hostile and careless inputs against a finished run: no hang, no traceback, bounded memory, no
silent wrong answer, no identifier leak.

Builds, in a temporary folder, a corpus of broken, misleading and malicious inputs of its own
(image files, file-system oddities, DICOM headers, output folders, configs, manifests, run
directories), runs ``sitefusion score`` / ``evaluate`` / ``config`` on them in subprocesses with a
time limit, and prints tried / passed / failed with a one-line reason per failure. A benchmark,
not a test: it needs a finished 2D single-channel run such as the demo's.

Run::

    make demo    # once, for runs/demo
    .venv/bin/python benchmarks/hostile_inputs.py runs/demo
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import yaml
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian

NAME, PID, BIRTH = "Quuxington^Zebediah", "PID-93XJQ7Z", "19610704"
SECRETS = ("Quuxington", "Zebediah", PID, "19610704", "1961-07-04", "04.07.1961")
TIMEOUT = 300


@dataclass
class Outcome:
    """What one case led to: passed, and if not, why."""

    name: str
    ok: bool
    reason: str = ""


def cli(*args: str, timeout: int = TIMEOUT) -> tuple[int, str, float]:
    """Run the sitefusion CLI; returns (exit code, stdout+stderr, seconds). 124: timed out."""
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-c", "from sitefusion.cli.main import main; main()", *args],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return 124, "timed out", time.perf_counter() - t0
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - t0


def clean_failure(code: int, output: str, expect: str) -> str | None:
    """A one-line error, exit 1, no traceback, the expected words; else why not."""
    if code == 124:
        return "hung (timed out)"
    if "Traceback" in output:
        return "traceback: " + output.strip().splitlines()[-1][:120]
    if code != 1:
        return f"exit code {code}, expected 1"
    if expect.lower() not in " ".join(output.split()).lower():
        return f"message lacks {expect!r}: {' '.join(output.split())[-160:]}"
    return None


# -- the image corpus ------------------------------------------------------------------------


def _png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def build_files(root: Path) -> dict[str, str]:
    """Write the image cases; returns file name -> expected status ("ok", "error", "ood")."""
    rng = np.random.default_rng(0)
    cases: dict[str, str] = {}
    good = rng.integers(0, 255, (32, 32), dtype=np.uint8)
    _png(root / "good.png", good)
    cases["good.png"] = "ok"
    ct = Path(get_testdata_file("CT_small.dcm"))
    shutil.copy(ct, root / "good_ct.dcm")
    cases["good_ct.dcm"] = "ok"
    nib.save(
        nib.Nifti1Image(rng.normal(size=(32, 32)).astype(np.float32), np.eye(4)),
        root / "good.nii.gz",
    )
    cases["good.nii.gz"] = "ok"
    blobs = {
        "png": (root / "good.png").read_bytes(),
        "dcm": ct.read_bytes(),
        "nii.gz": (root / "good.nii.gz").read_bytes(),
    }
    jpg = root / "_src.jpg"
    Image.fromarray(good).save(jpg)
    blobs["jpg"] = jpg.read_bytes()
    jpg.unlink()
    raw = root / "_src.nii"
    nib.save(nib.Nifti1Image(rng.normal(size=(16, 16)).astype(np.float32), np.eye(4)), raw)
    blobs["nii"] = raw.read_bytes()
    raw.unlink()
    for kind, data in blobs.items():
        for cut in (0, 8, 33, 100, len(data) // 2, len(data) * 9 // 10):
            name = f"trunc_{cut}.{kind}"
            (root / name).write_bytes(data[:cut])
            cases[name] = "error"
    for suffix in ("png", "jpg", "dcm", "nii", "nii.gz", "tif"):
        (root / f"noise_bytes.{suffix}").write_bytes(rng.bytes(4096))
        cases[f"noise_bytes.{suffix}"] = "error"
    (root / "text.png").write_text("not an image\n" * 10)
    (root / "text.dcm").write_text("DICM? no.\n")
    cases.update({"text.png": "error", "text.dcm": "error"})
    (root / "passwd.png").symlink_to("/etc/passwd")
    cases["passwd.png"] = "error"
    os.mkfifo(root / "fifo.png")
    cases["fifo.png"] = "error"
    (root / "dangling.png").symlink_to(root / "gone.png")
    (root / "loop.png").symlink_to(root / "loop.png")
    cases.update({"dangling.png": "error", "loop.png": "error"})
    weird = {
        os.fsdecode(b"caf\xe9.png"): "ok",
        "=HYPERLINK(1).png": "ok",
        ("x" * 240) + ".png": "ok",
        "line\nbreak.png": "ok",
    }
    for name, expected in weird.items():
        _png(root / name, good)
        cases[name] = expected
    # DICOM headers: formulas and invalid UIDs, bombs, identifiers in paths.
    for i, (field, value) in enumerate(
        [
            ("StudyInstanceUID", '=HYPERLINK("http://x","y")'),
            ("SeriesInstanceUID", "+cmd|' /C calc'!A0"),
            ("SOPInstanceUID", "@SUM(1+1)*cmd|' /C calc'!A0"),
            ("StudyInstanceUID", "1.2.03.abc"),
        ]
    ):
        ds = pydicom.dcmread(ct)
        setattr(ds, field, value)
        ds.save_as(root / f"uid_{i}.dcm")
        cases[f"uid_{i}.dcm"] = "ok"
    for i, (rows, frames) in enumerate([(65535, 100), (40000, 1)]):
        ds = pydicom.dcmread(ct)
        ds.Rows, ds.Columns, ds.NumberOfFrames = rows, rows, frames
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(root / f"bomb_{i}.dcm", enforce_file_format=True)
        cases[f"bomb_{i}.dcm"] = "error"
    header = nib.Nifti1Header()
    header.set_data_shape((10_000, 10_000, 10_000))
    with (root / "bomb.nii").open("wb") as fh:
        header.write_to(fh)
        fh.write(b"\0" * 1024)
    cases["bomb.nii"] = "error"
    big = Image.new("L", (20_000, 20_000))
    big.save(root / "bomb.png", optimize=True)
    cases["bomb.png"] = "error"
    tagged = root / f"patient_{PID}" / f"born_{BIRTH}"
    tagged.mkdir(parents=True)
    for fname in (f"{NAME.split('^')[0]}_1961-07-04.dcm", "04.07.1961.dcm"):
        ds = pydicom.dcmread(ct)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PID, BIRTH
        ds.save_as(tagged / fname)
        cases[fname] = "redacted"
    # Images the normalizer cannot represent; odd shapes.
    _png(root / "blank.png", np.zeros((32, 32), np.uint8))
    nib.save(
        nib.Nifti1Image(rng.uniform(5e4, 6e4, (32, 32)).astype(np.float32), np.eye(4)),
        root / "far_range.nii.gz",
    )
    cases.update({"blank.png": "ood", "far_range.nii.gz": "ood"})
    nib.save(
        nib.Nifti1Image(rng.normal(size=(32, 32, 1, 1)).astype(np.float32), np.eye(4)),
        root / "flat4d.nii.gz",
    )
    nib.save(
        nib.Nifti1Image(rng.normal(size=(8, 8, 4, 3)).astype(np.float32), np.eye(4)),
        root / "real4d.nii.gz",
    )
    _png(root / "one_pixel.png", np.zeros((1, 1), np.uint8))
    _png(root / "strip.png", rng.integers(0, 255, (1, 4000), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 255, (32, 32, 4), dtype=np.uint8)).save(root / "rgba.png")
    frames = [Image.fromarray(good), Image.fromarray(255 - good)]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    cases.update(
        {
            "flat4d.nii.gz": "ok",
            "real4d.nii.gz": "error",
            "one_pixel.png": "ok",
            "strip.png": "ok",
            "rgba.png": "error",
            "anim.gif": "error",
        }
    )
    return cases


def check_files(run: Path, work: Path) -> list[Outcome]:
    inputs = work / "inputs"
    inputs.mkdir()
    cases = build_files(inputs)
    out = work / "scores"
    (inputs / "link_to_out").symlink_to(out, target_is_directory=True)
    out.mkdir()
    code, output, _ = cli(
        "score", str(run), str(inputs), "/dev/zero", "--out", str(inputs / "link_to_out")
    )
    outcomes = [
        Outcome(
            "score over the corpus: no traceback, exit 0",
            code == 0 and "Traceback" not in output,
            f"exit {code}: {output.strip()[-200:]}",
        )
    ]
    rows = (
        [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
        if (out / "scores.jsonl").exists()
        else []
    )
    by_name = {os.path.basename(r["input"]): r for r in rows}
    outcomes.append(
        Outcome(
            "/dev/zero on the command line gets an error row",
            by_name.get("zero", {}).get("status") == "error",
        )
    )
    outcomes.append(
        Outcome(
            "the output folder, linked inside the inputs, is not scored",
            not any("scores.csv" in n or "scores.jsonl" in n for n in by_name),
        )
    )
    redacted = [r for r in rows if "[redacted]" in r["input"]]
    for name, expected in sorted(cases.items()):
        if expected == "redacted":  # its name is an identifier: its row must not echo it
            ok = len(redacted) == 2 and all(r["status"] == "ok" for r in redacted)
            outcomes.append(
                Outcome(f"file named after the patient ({name[:3]}...)", ok, "no redacted row")
            )
            continue
        # A name that is not UTF-8 is written with its undecodable bytes as \xNN.
        shown = os.fsencode(name).decode("utf-8", "backslashreplace")
        row = by_name.get(shown)
        if row is None:
            outcomes.append(Outcome(f"file {shown[:40]!r}", False, "no row"))
            continue
        problem = ""
        if expected == "error" and row["status"] != "error":
            problem = f"status {row['status']}, expected an error row"
        elif expected == "error" and ("\n" in str(row["error"]) or not row["error"]):
            problem = "error is not one line"
        elif expected in ("ok", "ood") and row["status"] != "ok":
            problem = f"error row: {row['error']}"
        elif expected == "ood" and not row.get("ood_flag"):
            problem = "not flagged out of distribution"
        outcomes.append(Outcome(f"file {shown[:40]!r} ({expected})", not problem, problem))
    leaked = [
        p.name
        for p in out.rglob("*")
        if p.is_file()
        and p.suffix != ".dcm"
        and any(s.lower().encode() in p.read_bytes().lower() for s in SECRETS)
    ]
    names = [str(p.relative_to(out)) for p in out.rglob("*")]
    leaked += [n for n in names if any(s.lower() in n.lower() for s in SECRETS)]
    leaked += ["console output"] if any(s.lower() in output.lower() for s in SECRETS) else []
    outcomes.append(
        Outcome(
            "no patient name, id or birth date in CSV, JSONL, names or logs",
            not leaked,
            f"found in {leaked[:3]}",
        )
    )
    return outcomes


# -- configs, output folders, manifests, run directories ------------------------------------


def config_cases(work: Path) -> list[tuple[str, Callable[[Path], Path], str]]:
    def text(body: str | bytes) -> Callable[[Path], Path]:
        def make(folder: Path) -> Path:
            p = folder / "c.yaml"
            p.write_bytes(body if isinstance(body, bytes) else body.encode())
            return p

        return make

    laughs = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)
    )
    return [
        ("alias bomb", text(laughs), "aliases"),
        ("self-referencing alias", text("name: &n [*n]\n"), "aliases"),
        ("non-UTF-8 text", text("name: café\n".encode("latin-1")), "not UTF-8"),
        ("python tag", text('name: !!python/object/apply:os.system ["echo x"]\n'), "python/object"),
        ("lr: .nan", text("training:\n  lr: .nan\n"), "finite"),
        ("lr: .inf", text("training:\n  lr: .inf\n"), "finite"),
        ("lr: -.inf", text("training:\n  lr: -.inf\n"), "finite"),
        ("10^24 epochs", text("training:\n  epochs: 1000000000000000000000000\n"), "at most"),
        ("100000x100000 images", text("data:\n  spatial_size: [100000, 100000]\n"), "at most"),
        ("unknown backbone", text("expert:\n  backbone: resnet9000\n"), "resnet9000"),
        (
            "repeated section",
            text("training:\n  epochs: 3\ntraining:\n  lr: 0.1\n"),
            "appears twice",
        ),
        ("unknown key", text("trainig:\n  epochs: 3\n"), "did you mean"),
        ("wrong type", text("training:\n  epochs: many\n"), "integer"),
        ("negative epochs", text("training:\n  epochs: -1\n"), "positive"),
        ("a list at the top", text("- a\n- b\n"), "mapping"),
        ("binary garbage", text(bytes(range(256)) * 4), "c.yaml"),
        ("a folder as config", lambda f: f, "cannot read"),
        ("a missing config", lambda f: f / "missing.yaml", "cannot read"),
        (
            "unknown normalizer parameter",
            text("normalization:\n  kind: zscore\n  params:\n    clips: [1, 99]\n"),
            "clip",
        ),
    ]


def check_configs(run: Path, work: Path) -> list[Outcome]:
    outcomes = []
    for name, make, expect in config_cases(work):
        folder = work / f"cfg_{len(outcomes)}"
        folder.mkdir()
        code, output, _ = cli("config", str(make(folder)))
        problem = clean_failure(code, output, expect)
        outcomes.append(Outcome(f"config: {name}", problem is None, problem or ""))
    code, output, _ = cli(
        "config",
        str(Path(__file__).parents[1] / "configs" / "demo.yaml"),
        "--set",
        "fusion.modes=&m [*m]",
    )
    problem = clean_failure(code, output, "aliases")
    outcomes.append(Outcome("config: alias through --set", problem is None, problem or ""))
    return outcomes


def check_outputs(run: Path, work: Path, image: Path) -> list[Outcome]:
    (work / "a_file").write_text("x")
    cases = [
        ("--out is a file", work / "a_file", "is a file"),
        ("--out under a file", work / "a_file" / "out", "lies under"),
        ("--out on a read-only file system", Path("/proc/sitefusion-out"), "cannot be written"),
        ("--out is /dev/null", Path("/dev/null"), "is a file"),
    ]
    outcomes = []
    for name, out, expect in cases:
        for command in (["score", str(run), str(image)], ["evaluate", str(run)]):
            code, output, _ = cli(*command, "--out", str(out))
            problem = clean_failure(code, output, expect)
            outcomes.append(Outcome(f"{command[0]}: {name}", problem is None, problem or ""))
    return outcomes


def check_manifests(run: Path, work: Path, image: Path) -> list[Outcome]:
    root = work / "mroot"
    root.mkdir()
    shutil.copy(image, root / "ok.png")
    os.mkfifo(root / "fifo.png")
    (root / "out_link.png").symlink_to("/etc/passwd")
    header = ["image_id", "image", "label", "site", "group"]

    def manifest(rows: list[list[str]], cols: list[str] = header, encoding: str = "utf-8") -> Path:
        p = root / f"m{len(list(root.glob('m*.csv')))}.csv"
        with p.open("w", newline="", encoding=encoding) as fh:
            writer = csv.writer(fh)
            writer.writerow(cols)
            writer.writerows(rows)
        return p

    row = ["i0", "ok.png", "class_0", "site_a", "g0"]
    cases = [
        (
            "../ path",
            manifest([["i0", "../../etc/passwd", "class_0", "site_a", "g0"]]),
            "outside the image root",
        ),
        (
            "absolute path",
            manifest([["i0", "/etc/passwd", "class_0", "site_a", "g0"]]),
            "outside the image root",
        ),
        (
            "link out of the root",
            manifest([["i0", "out_link.png", "class_0", "site_a", "g0"]]),
            "outside the image root",
        ),
        ("a FIFO", manifest([["i0", "fifo.png", "class_0", "site_a", "g0"]]), "FIFO"),
        ("a missing column", manifest([row[:4]], header[:4]), "no column"),
        ("a duplicate id", manifest([row, row]), "duplicate id"),
        (
            "an unknown label",
            manifest([["i0", "ok.png", "klass_0", "site_a", "g0"]]),
            "unknown label",
        ),
        (
            "non-UTF-8 text",
            manifest([["i0", "ok.png", "class_0", "sité", "g0"]], encoding="latin-1"),
            "cannot read",
        ),
        ("a header only", manifest([]), "no rows"),
        ("an empty file", (lambda p: (p.write_text(""), p)[1])(root / "empty.csv"), "empty"),
    ]
    outcomes = []
    for name, path, expect in cases:
        code, output, _ = cli(
            "evaluate",
            str(run),
            "--manifest",
            str(path),
            "--image-root",
            str(root),
            "--out",
            str(work / "rep"),
        )
        problem = clean_failure(code, output, expect)
        outcomes.append(Outcome(f"evaluate --manifest: {name}", problem is None, problem or ""))
    return outcomes


def check_runs(run: Path, work: Path, image: Path) -> list[Outcome]:
    (work / "run_file").write_text("x")
    tampered = work / "tampered"
    shutil.copytree(run, tampered, ignore=shutil.ignore_patterns("data", "report"))
    (tampered / "config.yaml").write_text('name: !!python/object/apply:os.system ["echo x"]\n')
    garbage = work / "garbage"
    shutil.copytree(run, garbage, ignore=shutil.ignore_patterns("data", "report"))
    (garbage / "manifest.json").write_text("{not json")
    cases = [
        ("a run that is a file", work / "run_file", "is a file"),
        ("a missing run", work / "nope", "does not exist"),
        ("a run whose config.yaml was replaced", tampered, "config.yaml"),
        ("a run whose manifest.json is garbage", garbage, "manifest.json"),
    ]
    outcomes = []
    for name, path, expect in cases:
        for command in (
            ["score", str(path), str(image), "--out", str(work / "s")],
            ["evaluate", str(path), "--out", str(work / "e")],
        ):
            code, output, _ = cli(*command)
            problem = clean_failure(code, output, expect)
            outcomes.append(Outcome(f"{command[0]}: {name}", problem is None, problem or ""))
    return outcomes


# -- issue 31, classes 1, 2, 6, 7: memory bombs under the header checks, identifiers in the
# paths of non-DICOM items, a full disk under --explain, formula cells in every CSV ----------

BOMB_BUDGET = 1 << 30  # what scoring one file may take above the process's own baseline

# `score` in a child that reports its own peak resident memory (VmHWM) and its baseline after
# importing torch; FULL_DISK names how many explanation pictures fit before ENOSPC.
_SCORE_CHILD = r"""
import atexit, errno, os, sys
def hwm(field="VmHWM"):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
import torch  # noqa: F401  (the baseline includes the experts' library)
base = hwm("VmRSS")
atexit.register(lambda: print(f"PEAK {base} {hwm()}", file=sys.stderr))
fits = int(os.environ.get("FULL_DISK", "-1"))
if fits >= 0:
    import sitefusion.scoring.explain as ex
    real, calls = ex.atomic_write, [0]
    def full(path, mode="w"):
        calls[0] += 1
        if calls[0] > fits:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, mode)
    ex.atomic_write = full
from sitefusion.cli.main import main
main()
"""


def _score_child(*args: str, full_disk: int = -1) -> tuple[int, str, int]:
    """``sitefusion score`` with its peak memory above its baseline (bytes; -1 if unknown)."""
    env = dict(os.environ, FULL_DISK=str(full_disk))
    try:
        done = subprocess.run(
            [sys.executable, "-c", _SCORE_CHILD, "score", *args],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return 124, "timed out", -1
    output = done.stdout + done.stderr
    peaks = [line.split() for line in output.splitlines() if line.startswith("PEAK ")]
    above = int(peaks[-1][2]) - int(peaks[-1][1]) if peaks else -1
    return done.returncode, output, above


def _zeros_stream(fh: object, packer: object, count: int) -> None:
    zeros = bytes(16 << 20)
    while count:
        n = min(count, len(zeros))
        fh.write(packer.compress(zeros[:n]))  # type: ignore[attr-defined]
        count -= n


def build_bombs(root: Path) -> dict[str, str]:
    """Small files that inflate or decode to gigabytes; name -> expected status."""
    import struct
    import zlib

    ct = Path(str(get_testdata_file("CT_small.dcm")))
    ds = pydicom.dcmread(ct)
    ds.Rows = ds.Columns = 512
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = root / "_head.dcm"
    ds.save_as(head, enforce_file_format=True)
    meta_len = 144 + int(
        pydicom.filereader.read_file_meta_info(head).FileMetaInformationGroupLength
    )
    body = pydicom.filebase.DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(body, ds)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with (root / "deflate_bomb.dcm").open("wb") as fh:
        fh.write(head.read_bytes()[:meta_len])
        fh.write(packer.compress(body.getvalue()))
        fh.write(packer.compress(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, 3 << 30)))
        _zeros_stream(fh, packer, 3 << 30)
        fh.write(packer.flush())
    head.unlink()
    header = nib.Nifti1Header()
    header.set_data_shape((32, 32))
    header.set_data_dtype(np.uint8)
    header.set_data_offset(352)
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    with (root / "gzip_bomb.dat").open("wb") as fh:  # a NIfTI not named .nii.gz
        fh.write(packer.compress(header.binaryblock + b"\0" * 4))
        _zeros_stream(fh, packer, int(3.4 * (1 << 30)))
        fh.write(packer.flush())
    Image.new("L", (12_000, 12_000)).save(root / "grey_12000.png", optimize=True)
    Image.new("RGB", (9_000, 9_000), (90, 30, 200)).save(root / "rgb_9000.jpg", quality=40)
    return {
        "deflate_bomb.dcm": "error",
        "gzip_bomb.dat": "ok",  # its header is honest: only its 1024 voxels are inflated
        "grey_12000.png": "error",
        "rgb_9000.jpg": "ok",  # decoded at 1/2 scale, within the limit (--convert-colour)
    }


def check_issue31_readers(run: Path, work: Path) -> list[Outcome]:
    """Classes 1, 2, 6 and 7 of issue 31."""
    outcomes: list[Outcome] = []
    root = work / "i31"
    bombs = root / "bombs"
    bombs.mkdir(parents=True)
    for name, expected in build_bombs(bombs).items():
        out = root / f"out_{name}"
        code, output, above = _score_child(
            run.as_posix(), str(bombs / name), "--out", str(out), "--convert-colour"
        )
        rows = _jsonl(out)
        # exit 1: "none of the inputs could be scored", the right answer for a refused bomb
        problem = "" if code in (0, 1) and len(rows) == 1 else f"exit {code}: {output[-160:]}"
        if not problem and rows[0]["status"] != expected:
            problem = f"status {rows[0]['status']} ({rows[0].get('error')}), expected {expected}"
        elif not problem and expected == "error" and "\n" in str(rows[0]["error"]):
            problem = "error is not one line"
        if not problem and not 0 <= above <= BOMB_BUDGET:
            problem = f"peak {above / 2**20:.0f} MiB above the baseline"
        outcomes.append(Outcome(f"bomb {name}: {expected} row within 1 GiB", not problem, problem))
    # Class 2: a photo and a note in the patient's folder, read before the DICOM.
    folder = root / "in" / "DOE_JOHN_PID778899"
    folder.mkdir(parents=True)
    _png(
        folder / "DOE_JOHN_photo.png", np.random.default_rng(2).integers(0, 255, (32, 32), np.uint8)
    )
    (folder / "notes.txt").write_text("referral\n")
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    ds.PatientName, ds.PatientID = "DOE^JOHN", "PID778899"
    ds.save_as(folder / "zz_ct.dcm")
    out = root / "out_patient"
    code, output, _ = _score_child(run.as_posix(), str(folder), "--out", str(out), "--explain")
    secrets = ("doe", "john", "pid778899")
    leaked = [p.name for p in out.rglob("*") if any(s in p.name.lower() for s in secrets)]
    leaked += [
        n
        for n in ("scores.csv", "scores.jsonl")
        if (out / n).exists() and any(s in (out / n).read_text().lower() for s in secrets)
    ]
    outcomes.append(
        Outcome(
            "identifiers of the folder's DICOM leave the photo's and the note's rows and names",
            code == 0 and not leaked,
            f"exit {code}; found in {leaked[:3]}",
        )
    )
    # Class 6: a disk that fills up after the first item's two pictures, then space is freed.
    images = root / "six"
    images.mkdir()
    for i in range(4):
        _png(images / f"p{i}.png", np.random.default_rng(i).integers(0, 255, (32, 32), np.uint8))
    out = root / "out_full"
    args = (run.as_posix(), str(images), "--out", str(out), "--explain")
    _score_child(*args, full_disk=2)
    first = _jsonl(out)
    named = [r for r in first if not r.get("explanation")]
    ok_named = len(named) == 3 and all(
        "No space left" in str(r["error"]) and "_gradcam.png" in str(r["error"]) for r in named
    )
    outcomes.append(Outcome("full disk: the error names the picture", ok_named, str(named[:1])))
    _score_child(*args)
    again = _jsonl(out)
    done = len(again) == 4 and all(
        r.get("explanation") and all((out / p).is_file() for p in r["explanation"]) for r in again
    )
    outcomes.append(Outcome("full disk: the rerun writes the missing pictures", done, ""))
    # Class 7: formula cells in every CSV written (splits.csv, per-site manifests).
    probe = (
        "import csv, sys, pathlib\n"
        "from sitefusion.data import Manifest, Record, split_manifest_by_site\n"
        "from sitefusion.data.splits import save_splits\n"
        "root = pathlib.Path(sys.argv[1])\n"
        "ids = [\"=cmd|' /C calc'!A0\", '+1', '-1', '@SUM(1)']\n"
        "recs = tuple(Record(i, root / 'x.png', 'a', '=s', '@g', n) for n, i in enumerate(ids))\n"
        "save_splits(root / 'splits.csv', Manifest(root / 'm.csv', recs, ('a',), ('=s',)), "
        "{i: 'train' for i in ids})\n"
        "(root / 'm.csv').write_text('image,site\\n=x.png,=s\\n')\n"
        "split_manifest_by_site(root / 'm.csv', root / 'sites', site_column='site')\n"
    )
    csv_root = root / "csv"
    csv_root.mkdir()
    done7 = subprocess.run([sys.executable, "-c", probe, str(csv_root)], capture_output=True)
    written = [csv_root / "splits.csv", *csv_root.glob("sites/*/manifest.csv")]
    bad = [
        f"{p.name}: {cell}"
        for p in written
        for row in csv.reader(p.read_text().splitlines())
        for cell in row
        if cell.startswith(("=", "+", "-", "@"))
    ]
    outcomes.append(
        Outcome(
            "formula cells are escaped in splits.csv and per-site manifests",
            done7.returncode == 0 and len(written) == 2 and not bad,
            f"exit {done7.returncode}; {bad[:3]}",
        )
    )
    return outcomes


def _jsonl(out: Path) -> list[dict[str, Any]]:
    path = out / "scores.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- end of issue 31, classes 1, 2, 6, 7 --------------------------------------------------------
# ===== issue 31, classes 3, 4, 5, 8, 9, 10 (branch hostile-cli) ==============================
# Tracebacks outside score (3), hangs (4), --out inside the run (5), stopping a site (8), a
# million-row manifest (9), smaller things (10). Each case builds its own input in `work`.


def _tiny_set(work: Path) -> tuple[Path, Path]:
    """A small generated 3-site set and a CSV config over it: (manifest, config)."""
    from sitefusion.config import config_from_dict, config_to_dict
    from sitefusion.data.synthetic import generate_synthetic_dataset

    manifest = generate_synthetic_dataset(
        work / "tiny_set", sites=3, images_per_site=40, classes=2, dims=2, size=24, seed=5
    )
    raw = {
        "name": "hostile",
        "data": {
            "source": "csv",
            "root": str(manifest.parent),
            "manifest": str(manifest),
            "id": "image_id",
            "spatial_size": [24, 24],
        },
        "expert": {"backbone": "compact", "out_channels": 8},
        "training": {"epochs": 1, "threads": 1},
    }
    config = work / "tiny.yaml"
    config.write_text(yaml.safe_dump(config_to_dict(config_from_dict(raw, "<bench>"))))
    return manifest, config


def _run_copy(run: Path, work: Path, name: str) -> Path:
    copy = work / name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("data", "report"))
    return copy


def _case(name: str, code: int, output: str, expect: str) -> Outcome:
    problem = clean_failure(code, output, expect)
    return Outcome(name, problem is None, problem or "")


def check_issue31_tracebacks(run: Path, work: Path, image: Path) -> list[Outcome]:
    """Class 3: a one-image site, seeds at and beyond the bounds, a deeply nested manifest.json."""
    manifest, config = _tiny_set(work)
    shifted = work / "shifted.csv"
    shutil.copy(manifest, shifted)
    with shifted.open("a") as fh:  # a comma in the label shifts the row into a one-image site
        fh.write(
            f"x0,{manifest.parent / 'images' / 'site_a' / 'img_00000.png'},class_0,site_z,gx\n"
        )
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["manifest"] = str(shifted)
    cfg["data"]["allow_outside_root"] = True
    shifted_cfg = work / "shifted.yaml"
    shifted_cfg.write_text(yaml.safe_dump(cfg))
    out = [
        _case(
            "prepare: a site of one image",
            *cli("prepare", str(shifted_cfg), "--out", str(work / "r_shift"))[:2],
            "site_z",
        )
    ]
    for seed, expect in (("99999999999999999999999", "2**32"), ("-1", "2**32")):
        code, output, _ = cli("config", str(config), "--set", f"seed={seed}")
        out.append(_case(f"config: seed {seed[:12]}", code, output, expect))
    code, output, _ = cli(
        "prepare",
        str(config),
        "--out",
        str(work / "r_seed"),
        "--set",
        "seed=4294967295",
        "--set",
        "split.seed=4294967295",
    )
    out.append(Outcome("prepare: seed 2**32-1 works", code == 0, output.strip()[-160:]))
    deep = _run_copy(run, work, "deep")
    (deep / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    for command in (["score", str(deep), str(image)], ["evaluate", str(deep)]):
        code, output, _ = cli(*command, "--out", str(work / f"deep_{command[0]}"))
        out.append(
            _case(f"{command[0]}: manifest.json nested 100,000 deep", code, output, "manifest.json")
        )
    return out


def _site(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from sitefusion.cli.main import main; main()", "site", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def _site_args(manifest: Path, superlink: str, workdir: Path) -> list[str]:
    from sitefusion.federated.deploy import free_port

    return [
        "--superlink",
        superlink,
        "--site",
        "site_a",
        "--manifest",
        str(manifest),
        "--workdir",
        str(workdir),
        "--port",
        str(free_port()),
    ]


def check_issue31_hangs(run: Path, work: Path, image: Path) -> list[Outcome]:
    """Class 4 and 8: /dev/zero in a run, a bad site workdir, no SuperLink, stopping a site."""
    from sitefusion.federated.deploy import (
        descendants,
        flower_env,
        free_port,
        start_process,
        superlink_command,
    )

    zero = _run_copy(run, work, "zero")
    (zero / "config.yaml").unlink()
    (zero / "config.yaml").symlink_to("/dev/zero")
    out = []
    for command in (["score", str(zero), str(image)], ["evaluate", str(zero)]):
        code, output, _ = cli(*command, "--out", str(work / f"zero_{command[0]}"), timeout=120)
        out.append(
            _case(
                f"{command[0]}: a run artifact linked to /dev/zero",
                code,
                output,
                "not a regular file",
            )
        )
    if not (work / "site").exists():
        (work / "site").mkdir()
        _tiny_set(work / "site")
    manifest = work / "site" / "tiny_set" / "manifest.csv"
    (work / "wd_file").write_text("x")
    code, output, took = cli(
        "site", *_site_args(manifest, f"127.0.0.1:{free_port()}", work / "wd_file"), timeout=60
    )
    out.append(_case(f"site: --workdir is a file ({took:.0f} s)", code, output, "wd_file"))
    address = f"127.0.0.1:{free_port()}"
    code, output, took = cli(
        "site", *_site_args(manifest, address, work / "wd"), "--connect-timeout", "5", timeout=120
    )
    problem = clean_failure(code, output, "unreachable") or (
        None if address in output else "no address"
    )
    out.append(
        Outcome(
            f"site: nothing listens at --superlink ({took:.0f} s)",
            problem is None and took < 60,
            problem or "",
        )
    )
    code, output, _ = cli("site", *_site_args(manifest, "10.255.0.1:9092", work / "wd"))
    cited = Path(__file__).parents[1] / "docs" / "architecture.md"
    out.append(
        Outcome(
            "site: the plain-text refusal cites a doc that exists",
            code == 1 and "docs/architecture.md" in output and cited.is_file(),
            output.strip()[-160:],
        )
    )
    port = free_port()
    link = start_process(
        "SuperLink",
        superlink_command(port),
        port,
        work / "superlink.log",
        flower_env(work / "flwr_home"),
    )
    try:
        site = _site(*_site_args(manifest, f"127.0.0.1:{port}", work / "wd8"))
        deadline = time.monotonic() + 90
        while len(descendants(site.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)
        started = descendants(site.pid)
        os.kill(site.pid, signal.SIGTERM)
        try:
            site.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(site.pid, signal.SIGKILL)
        time.sleep(0.5)
        left = [
            p
            for p in started
            if Path(f"/proc/{p}").exists() and ") Z" not in Path(f"/proc/{p}/stat").read_text()
        ]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        out.append(
            Outcome(
                f"site: SIGTERM stops all {len(started)} processes it started",
                bool(started) and not left,
                f"left running: {left}",
            )
        )
    finally:
        link.stop(grace=5)
    return out


def check_issue31_outputs(run: Path, work: Path, image: Path) -> list[Outcome]:
    """Class 5: an output folder that is, or lies inside, the run directory (``score``), or
    that is the run folder or one of its artifact folders (``evaluate``, whose report may be a
    folder of its own inside the run, ``runs/ham/report``)."""
    copy = _run_copy(run, work, "out_in_run")
    before = sorted(str(p.relative_to(copy)) for p in copy.rglob("*"))
    out = []
    cases = [
        (["score", str(copy), str(image)], copy, "inside the run directory"),
        (["score", str(copy), str(image)], copy / "scores", "inside the run directory"),
        (["evaluate", str(copy)], copy, "inside the run directory"),
        (["evaluate", str(copy)], copy / "experts" / "report", "among the run's own artifacts"),
    ]
    for command, target, expected in cases:
        code, output, _ = cli(*command, "--out", str(target))
        out.append(_case(f"{command[0]}: --out {target.relative_to(work)}", code, output, expected))
    after = sorted(str(p.relative_to(copy)) for p in copy.rglob("*"))
    out.append(Outcome("nothing was written into the run", before == after, "run changed"))
    return out


MILLION_ROWS = """
import resource, sys, time
from sitefusion.config import DataConfig
from sitefusion.data import load_manifest
t0 = time.perf_counter()
m = load_manifest(sys.argv[1], DataConfig(id="image_id"))
print(len(m), time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def check_issue31_large(run: Path, work: Path, image: Path) -> list[Outcome]:
    """Class 9: a 1,000,000-row manifest (65 MB) validates in under 30 s and 1 GiB."""
    folder = work / "million"
    (folder / "img").mkdir(parents=True)
    for k in range(1000):
        shutil.copy(image, folder / "img" / f"{k}.png")
    path = folder / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_id", "image", "label", "site", "group"])
        for i in range(1_000_000):
            writer.writerow(
                [
                    f"site_{i % 4}_img_{i:07d}",
                    f"img/{i % 1000}.png",
                    f"class_{i % 3}",
                    f"site_{i % 4}",
                    f"site_{i % 4}_g{i // 3:07d}",
                ]
            )
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-c", MILLION_ROWS, str(path)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return [Outcome("1,000,000-row manifest validates", False, "hung (timed out)")]
    took = time.perf_counter() - t0
    try:
        rows, seconds, mib = done.stdout.split()
    except ValueError:
        return [Outcome("1,000,000-row manifest validates", False, done.stderr.strip()[-200:])]
    return [
        Outcome(
            f"1,000,000-row manifest validates in under 30 s ({float(seconds):.1f} s, {took:.0f} s with start-up; load average {load:.1f})",
            rows == "1000000" and float(seconds) < 30,
        ),
        Outcome(f"1,000,000-row manifest validates in under 1 GiB ({mib} MiB)", int(mib) < 1024),
    ]


def check_issue31_small(run: Path, work: Path, image: Path) -> list[Outcome]:
    """Class 10: an empty config, classes from the labels, readable run files, no SuperLink."""
    from sitefusion.federated.deploy import free_port

    if not (work / "site").exists():
        (work / "site").mkdir()
        _tiny_set(work / "site")
    config = work / "site" / "tiny.yaml"
    (work / "empty.yaml").write_text("")
    out = [_case("config: an empty file", *cli("config", str(work / "empty.yaml"))[:2], "empty")]
    code, output, _ = cli("prepare", str(config), "--out", str(work / "r10"))
    out.append(
        Outcome(
            "prepare: classes taken from the labels are listed",
            code == 0 and "data.classes is not set" in output,
            output.strip()[-160:],
        )
    )
    private = [
        str(p.relative_to(work / "r10"))
        for p in (work / "r10").rglob("*")
        if p.is_file() and p.stat().st_mode & 0o044 != 0o044
    ]
    out.append(
        Outcome(
            "prepare: every run file readable by other users",
            (work / "r10").exists() and not private,
            f"{private[:3]}",
        )
    )
    address = f"127.0.0.1:{free_port()}"
    code, output, _ = cli(
        "federate",
        str(Path(__file__).parents[1] / "configs" / "demo-federated.yaml"),
        "--out",
        str(work / "fed"),
        "--superlink",
        address,
    )
    problem = clean_failure(code, output, "unreachable") or (
        None if address in output and "None" not in output else "no address, or 'None'"
    )
    out.append(
        Outcome("federate: an unreachable SuperLink is named", problem is None, problem or "")
    )
    return out


ISSUE31_CLI_PARTS = (
    check_issue31_tracebacks,
    check_issue31_hangs,
    check_issue31_outputs,
    check_issue31_large,
    check_issue31_small,
)
# ===== end of issue 31, classes 3, 4, 5, 8, 9, 10 ============================================


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished 2D single-channel run (runs/demo)")
    args = parser.parse_args()
    run = args.run.resolve()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        image = work / "one.png"
        _png(image, np.random.default_rng(1).integers(0, 255, (32, 32), dtype=np.uint8))
        outcomes = []
        for part in (check_files, check_configs, check_issue31_readers):
            outcomes += part(run, work)
        for part in (check_outputs, check_manifests, check_runs):
            outcomes += part(run, work, image)
        for issue31_part in ISSUE31_CLI_PARTS:
            outcomes += issue31_part(run, work, image)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB -> MiB
    outcomes.append(
        Outcome(f"peak memory of any command below 3 GiB ({peak:.0f} MiB)", peak < 3072)
    )
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        print(f"FAIL {o.name}: {o.reason}")
    print(
        f"tried {len(outcomes)}, passed {len(outcomes) - len(failed)}, failed {len(failed)} "
        f"({time.perf_counter() - t0:.0f} s; peak memory {peak:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
