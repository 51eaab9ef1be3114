"""Export a run's product fusion as one ONNX graph, with its pre-processing and a runner.

The graph is the whole fused system, the fusion's expert networks (its own fine-tuned copies
where it has them, else the site experts) and its head: ``image [B, C, *S]`` (normalized) ->
``probabilities [B, K]`` (softmax of the logits divided by the run's temperature, as
``sitefusion score`` writes them) and ``weights [B, E]`` (the fusion's expert weights). The
site normalizers stay outside the graph, in ``preprocessing.json``: which site's parameters an
image needs is decided per image (``--site``, or the unseen-site policy), and the histogram
normalizer's landmarks are per-image percentiles, which ONNX has no operator for. Written with
torch's TorchScript-based exporter (``dynamo=False``): it works offline and needs no
``onnxscript``.

Folder written (each file atomically): ``model.onnx``, ``preprocessing.json``, ``run_model.py``
(numpy + onnxruntime, no sitefusion), ``export.json`` (run id, method, opset, software, the
parity check and every file's SHA-256).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sitefusion.atomic import atomic_write, sha256_file
from sitefusion.errors import ArtifactError, MissingDependencyError, UnknownChoiceError
from sitefusion.fusion import FusedSystem
from sitefusion.methods import LoadedRun
from sitefusion.normalization.base import SIGNATURE_LEVELS
from sitefusion.rundir import RunDir
from sitefusion.rundir.environment import package_version

__all__ = [
    "EXPORT_FORMATS",
    "PREPROCESSING_FORMAT",
    "PREPROCESSING_VERSION",
    "ExportResult",
    "ProbabilityGraph",
    "export_run",
    "preprocessing_document",
]

EXPORT_FORMATS = ("onnx",)
PREPROCESSING_FORMAT = "sitefusion.onnx_preprocessing"
PREPROCESSING_VERSION = 1
#: The largest |difference| of probabilities between onnxruntime and PyTorch an export accepts.
PARITY_TOLERANCE = 1e-4
OPSET = 17
RUNNER = Path(__file__).with_name("run_model.py")


class ProbabilityGraph(nn.Module):
    """The exported network: normalized images ``[B, C, *S]`` -> probabilities ``[B, K]`` and
    expert weights ``[B, E]``, every expert present."""

    def __init__(self, system: FusedSystem, temperature: float) -> None:
        super().__init__()
        self.system = system.eval()
        self.temperature = float(temperature)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.system(image)
        return torch.softmax(out.logits / self.temperature, dim=-1), out.weights


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_run` wrote and how closely onnxruntime matched PyTorch."""

    run_id: str
    method: str
    model: Path
    preprocessing: Path
    runner: Path
    record: Path
    checked_images: int
    max_abs_diff: float


def preprocessing_document(run: LoadedRun) -> dict[str, Any]:
    """The versioned pre-processing JSON of ``run``: geometry, resizing rule, every site's
    normalizer record (as the run stores it, hash-checked), the pooled one, the unseen-site
    policy and the signature levels that the ``nearest`` policy compares."""
    store = RunDir(run.root)
    index = store.read_json("normalizers/bank.json")
    records = {str(e["site"]): store.read_json(f"normalizers/{e['file']}") for e in index["sites"]}
    pooled = index.get("pooled")
    return {
        "format": PREPROCESSING_FORMAT,
        "version": PREPROCESSING_VERSION,
        "run_id": run.run_id,
        "classes": list(run.classes),
        "experts": list(run.expert_sites),
        "channels": run.channels,
        "spatial_size": list(run.spatial_size),
        "resize": "area averaging when no axis grows, else linear with half-pixel centres",
        "normalizer_kind": index.get("kind"),
        "unseen_policy": run.bank.unseen_policy,
        "signature_levels": list(SIGNATURE_LEVELS),
        "normalizers": records,
        "pooled": store.read_json(f"normalizers/{pooled['file']}") if pooled else None,
    }


def _data_format(run: LoadedRun, shape: tuple[int, ...]) -> dict[str, Any]:
    """Inputs and outputs in the vocabulary of a MONAI bundle's ``metadata.json``
    (``network_data_format``), so that bundle tooling and readers find the familiar fields."""
    return {
        "inputs": {
            "image": {
                "type": "image",
                "format": "normalized intensities (preprocessing.json)",
                "num_channels": shape[0],
                "spatial_shape": list(shape[1:]),
                "dtype": "float32",
                "value_range": [],
                "is_patch_data": False,
                "channel_def": {},
            }
        },
        "outputs": {
            "probabilities": {
                "type": "probabilities",
                "format": "classes",
                "num_channels": len(run.classes),
                "spatial_shape": [1],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_onehot": False,
                "channel_def": dict(enumerate(run.classes)),
            },
            "weights": {
                "type": "probabilities",
                "format": "fusion weight of each site's expert",
                "num_channels": len(run.expert_sites),
                "spatial_shape": [1],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_onehot": False,
                "channel_def": dict(enumerate(run.expert_sites)),
            },
        },
    }


def _graph(run: LoadedRun) -> tuple[str, ProbabilityGraph]:
    method = run.fusion()
    system = FusedSystem(method.networks or run.experts, method.head)
    return method.name, ProbabilityGraph(system, method.temperature_).eval()


def _write_onnx(graph: ProbabilityGraph, shape: tuple[int, ...], path: Path) -> None:
    example = torch.zeros((2, *shape), dtype=torch.float32)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".export."))
    try:
        target = tmp / path.name
        # The tracer warns about every Python-level shape check (argument validation that is
        # constant for a fixed input shape) and about the legacy exporter; the parity check
        # after export is what tells whether the graph is right.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                (example,),
                str(target),
                dynamo=False,
                input_names=["image"],
                output_names=["probabilities", "weights"],
                dynamic_axes={
                    "image": {0: "batch"},
                    "probabilities": {0: "batch"},
                    "weights": {0: "batch"},
                },
                opset_version=OPSET,
            )
        target.replace(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def parity(graph: ProbabilityGraph, model: Path, images: np.ndarray) -> tuple[float, float]:
    """Max |difference| of probabilities and of weights between onnxruntime and PyTorch on
    normalized ``images [N, C, *S]``."""
    try:
        import onnxruntime as ort  # lazy: an optional dependency (extra 'export')
    except ImportError as err:
        raise MissingDependencyError(
            "checking the export needs onnxruntime: pip install 'sitefusion[export]'"
        ) from err
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    probs, weights = session.run(["probabilities", "weights"], {"image": images})
    with torch.inference_mode():
        ref_p, ref_w = graph(torch.from_numpy(images))
    return (
        float(np.abs(np.asarray(probs) - ref_p.numpy()).max()),
        float(np.abs(np.asarray(weights) - ref_w.numpy()).max()),
    )


def export_run(
    run_dir: str | Path, out_dir: str | Path, *, format_: str = "onnx", check_images: int = 8
) -> ExportResult:
    """Export the finished run in ``run_dir`` to ``out_dir`` (see the module's docstring).

    The export is checked before it is kept: ``check_images`` seeded standard-normal images in
    normalized space go through onnxruntime and PyTorch, and an export whose probabilities
    differ by more than :data:`PARITY_TOLERANCE` is refused.

    Raises:
        UnknownChoiceError: ``format_`` is not one of :data:`EXPORT_FORMATS`.
        ArtifactError: the run is missing, unfinished or changed; the parity check failed.
        MissingDependencyError: onnx or onnxruntime is not installed.
    """
    if format_ not in EXPORT_FORMATS:
        raise UnknownChoiceError("export format", format_, EXPORT_FORMATS)
    try:
        import onnx  # noqa: F401  # lazy: an optional dependency (extra 'export')
    except ImportError as err:
        raise MissingDependencyError(
            "ONNX export needs onnx and onnxruntime: pip install 'sitefusion[export]'"
        ) from err
    run = LoadedRun(run_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name, graph = _graph(run)
    shape = (run.channels, *run.spatial_size)
    model = out / "model.onnx"
    _write_onnx(graph, shape, model)
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((check_images, *shape)).astype(np.float32)
    diff_p, diff_w = parity(graph, model, sample)
    if not diff_p <= PARITY_TOLERANCE:
        model.unlink(missing_ok=True)
        raise ArtifactError(
            f"{model}: onnxruntime's probabilities differ from PyTorch's by {diff_p:.3g} "
            f"(tolerance {PARITY_TOLERANCE:g}); the export was removed"
        )
    pre = out / "preprocessing.json"
    with atomic_write(pre) as fh:
        json.dump(preprocessing_document(run), fh, indent=2)
        fh.write("\n")
    runner = out / "run_model.py"
    with atomic_write(runner) as fh:
        fh.write(RUNNER.read_text(encoding="utf-8"))
    record = out / "export.json"
    with atomic_write(record) as fh:
        json.dump(
            {
                "format": "sitefusion.export",
                "version": 1,
                "run_id": run.run_id,
                "method": name,
                "temperature": run.temperature(name),
                "onnx_opset": OPSET,
                "network_data_format": _data_format(run, shape),
                "parity_check": {
                    "images": check_images,
                    "inputs": "seeded standard-normal images in normalized space",
                    "max_abs_diff_probabilities": diff_p,
                    "max_abs_diff_weights": diff_w,
                },
                "software": {
                    k: package_version(k) for k in ("sitefusion", "torch", "onnx", "onnxruntime")
                },
                "sha256": {p.name: sha256_file(p) for p in (model, pre, runner)},
            },
            fh,
            indent=2,
        )
        fh.write("\n")
    return ExportResult(run.run_id, name, model, pre, runner, record, check_images, diff_p)
