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
    """Class 5: an output folder that is, or lies inside, the run directory."""
    copy = _run_copy(run, work, "out_in_run")
    before = sorted(str(p.relative_to(copy)) for p in copy.rglob("*"))
    out = []
    for target in (copy, copy / "scores"):
        for command in (["score", str(copy), str(image)], ["evaluate", str(copy)]):
            code, output, _ = cli(*command, "--out", str(target))
            out.append(
                _case(
                    f"{command[0]}: --out {target.relative_to(work)}",
                    code,
                    output,
                    "inside the run directory",
                )
            )
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
        for part in (check_files, check_configs):
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
