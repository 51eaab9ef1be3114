"""A finished run directory, loaded with every method it holds, each artifact hash-checked as
it is read.

Each image is normalized once (its own site's normalizer, or the run's unseen-site policy) and
passed once through every site expert; every method then predicts from those shared outputs plus
whatever its own networks computed on the same batches (:mod:`sitefusion.methods.base`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sitefusion.config import Config, config_from_dict, parse_yaml
from sitefusion.errors import ArtifactError, SiteFusionError
from sitefusion.experts import SiteExpert
from sitefusion.methods.base import (
    ImageBatch,
    LoadContext,
    Method,
    MethodOutput,
    concat_own,
    load_network,
)
from sitefusion.methods.fusion import FUSION_METHOD_NAMES, FusionMethod
from sitefusion.methods.registry import configured_methods
from sitefusion.normalization import NormalizedImage, NormalizerBank
from sitefusion.rundir import RunDir
from sitefusion.training.device import resolve_device
from sitefusion.training.features import ExpertFeatures

__all__ = ["LoadedRun", "RunPredictions"]


@dataclass
class RunPredictions:
    """Every requested method's probabilities on N images, plus what was used to get them.

    ``features``: the site experts' outputs ``[N, E, D]`` / ``[N, E, K]``; ``own``: per method,
    the arrays its own networks computed (:meth:`Method.forward`).
    """

    probs: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [N, K]
    attention: dict[str, np.ndarray] = field(default_factory=dict)  # fusion name -> [N, E]
    norm_site: list[str] = field(default_factory=list)
    norm_policy: list[str] = field(default_factory=list)
    features: ExpertFeatures | None = None
    own: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


class LoadedRun:
    """A run directory, hash-checked and loaded for prediction.

    Attributes: ``cfg``, ``classes``, ``expert_sites`` (expert order), ``bank`` (normalizers),
    ``experts`` (the trained site experts), ``methods`` (name -> loaded
    :class:`~sitefusion.methods.base.Method`, in training order), ``device`` (where the
    networks run: ``device``, refused with a :class:`~sitefusion.errors.ConfigError` where
    absent; default the run's ``training.device``, or the CPU with a warning where that is a
    CUDA device this machine lacks).
    Fusion heads predict on the CPU from the experts' numpy outputs.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        methods: Collection[str] | None = None,
        device: str | None = None,
    ) -> None:
        """Load the site experts and ``methods`` of ``root`` (default: every method the run
        holds; scoring names only the fusion heads, whose loading is a fraction of building
        every baseline's networks) onto ``device``.

        Every artifact a prediction reads is checked against its recorded SHA-256 when it is
        read (the run directory's readers do it; the normalizer bank, read from its folder, is
        checked here first). Artifacts no prediction reads are not hashed: training's
        checkpoints (its resume state, 266 of the 400 MB of the HAM10000 run) and the methods
        not loaded; ``RunDir.verify_all`` checks those too."""
        self.root = Path(root)
        if not self.root.is_dir():
            if self.root.exists():
                raise ArtifactError(f"{self.root}: is a file, not a run directory")
            raise ArtifactError(f"{self.root}: run directory does not exist")
        self.run = RunDir(self.root)
        info = self.run.read_manifest()
        if info.get("status") != "complete":
            raise ArtifactError(
                f"{self.root}: the run is not complete (status {info.get('status')!r}); "
                "finish it with `sitefusion train`"
            )
        for rel in info["artifacts"]:
            if rel.startswith("normalizers/"):
                self.run.verify(rel)
        self.run_id: str = str(info.get("run_id", ""))
        #: UTC time the run was finished (``YYYY-MM-DDTHH:MM:SSZ``); ``None`` for older runs.
        self.completed_at: str | None = info.get("completed_at")
        source = str(self.root / "config.yaml")
        raw = parse_yaml(self.run.read_text("config.yaml"), source)
        self.cfg: Config = config_from_dict(raw, source)
        self.schema: dict[str, Any] = self.run.read_json("schema.json")
        self.classes: tuple[str, ...] = tuple(self.schema["classes"])
        self.expert_sites: tuple[str, ...] = tuple(self.schema["experts"])
        self.bank = NormalizerBank.load(self.root / "normalizers")
        self.device = self._device(device)
        ctx = LoadContext(self.run, self.cfg, self.classes, self.expert_sites, self.device)
        self.experts: list[SiteExpert] = [
            load_network(ctx, f"experts/{s}.safetensors") for s in self.expert_sites
        ]
        self.methods: dict[str, Method] = {
            m.name: m.load(ctx)
            for m in configured_methods(self.cfg, self.expert_sites)
            if (methods is None or m.name in methods) and m.is_trained(self.run)
        }

    def _device(self, requested: str | None) -> torch.device:
        """The asked-for device (refused if absent), else the run's ``training.device``; a run
        trained on CUDA read on a machine without it predicts on the CPU, with a warning: the
        networks are the same, and scoring a GPU-trained run on a CPU machine is the usual
        deployment."""
        if requested is not None:
            return resolve_device(requested, "device")
        configured = self.cfg.training.device
        if configured.startswith("cuda") and not torch.cuda.is_available():
            warnings.warn(
                f"{self.root / 'config.yaml'}: training.device is {configured!r} but CUDA is not "
                "available here; predicting on the CPU",
                RuntimeWarning,
                stacklevel=3,
            )
            return torch.device("cpu")
        return resolve_device(configured, f"{self.root / 'config.yaml'}: training.device")

    @property
    def spatial_size(self) -> tuple[int, ...]:
        """The run's image size ``S``."""
        return tuple(self.cfg.data.spatial_size)

    @property
    def channels(self) -> int:
        """The run's channel count ``C``."""
        return self.cfg.data.channels

    @property
    def method_names(self) -> list[str]:
        """Names of every method this run can predict with."""
        return list(self.methods)

    def fusion(self, name: str | None = None) -> FusionMethod:
        """The fusion method ``name`` (default: the product fusion, else the first fusion)."""
        names = [name] if name is not None else list(FUSION_METHOD_NAMES.values())
        for n in names:
            method = self.methods.get(n)
            if isinstance(method, FusionMethod):
                return method
        raise ArtifactError(f"{self.root}: the run holds no fusion head {name or ''}".rstrip())

    def temperature(self, name: str) -> float:
        """The temperature scoring divides fusion ``name``'s logits by (1: no scaling)."""
        return self.fusion(name).temperature_

    @torch.inference_mode()
    def predict(
        self,
        images: np.ndarray,
        sites: Sequence[str | None],
        *,
        batch_size: int = 64,
        bank: NormalizerBank | None = None,
        methods: Collection[str] | None = None,
        on_batch: Callable[[int], None] | None = None,
        normalized: Sequence[NormalizedImage] | None = None,
    ) -> RunPredictions:
        """Predict on conformed images ``[N, C, *S]`` of the given sites.

        ``sites[i]`` may be ``None`` or a site the run does not know: the bank's unseen-site policy
        then picks the normalizer. ``bank`` overrides the run's bank (leave-one-site-out).
        ``methods``: which methods to compute (default: all; an empty collection gives only the
        site experts' outputs). ``normalized``: ``bank.transform(images[i], sites[i])`` of every
        image, computed by the caller (scoring normalizes in its readers, away from the
        networks).
        """
        if len(images) != len(sites):
            raise SiteFusionError(f"{len(images)} images but {len(sites)} site entries")
        if normalized is not None and len(normalized) != len(images):
            raise SiteFusionError(f"{len(images)} images but {len(normalized)} normalized images")
        chosen = self._select(methods)
        bank = bank or self.bank
        n, k, e = len(images), len(self.classes), len(self.experts)
        d = self.experts[0].feature_dim
        feats = np.zeros((n, e, d), np.float32)
        logits = np.zeros((n, e, k), np.float32)
        parts: dict[str, list[dict[str, np.ndarray]]] = {m.name: [] for m in chosen}
        out = RunPredictions()
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            normed = (
                list(normalized[start:stop])
                if normalized is not None
                else [bank.transform(images[i], sites[i]) for i in range(start, stop)]
            )
            out.norm_site += [ni.site_used for ni in normed]
            out.norm_policy += [ni.policy for ni in normed]
            x = np.stack([ni.array for ni in normed]).astype(np.float32, copy=False)
            xb = torch.from_numpy(x).to(self.device)
            for j, expert in enumerate(self.experts):
                z = expert.embed(xb)
                feats[start:stop, j] = z.float().cpu().numpy()
                logits[start:stop, j] = expert.head(z).float().cpu().numpy()
            batch = ImageBatch(normalized=x, raw=images[start:stop], bank=bank)
            for method in chosen:
                parts[method.name].append(method.forward(batch))
            if on_batch is not None:
                on_batch(stop - start)
        out.features = ExpertFeatures(tuple(str(i) for i in range(n)), feats, logits)
        out.own = {name: concat_own(p) for name, p in parts.items()}
        for method in chosen:
            self._store(out, method.name, method.predict(out.features, out.own[method.name]))
        return out

    def predict_rows(
        self,
        preds: RunPredictions,
        rows: slice | np.ndarray,
        method: str,
        *,
        mask: np.ndarray | None = None,
        calibrated: bool = False,
    ) -> MethodOutput | None:
        """``method`` on the ``rows`` of an earlier :meth:`predict` (its outputs reused).

        Scoring predicts each item on its own: batched matrix products could differ in the
        last bits, and an item's score must not depend on its batch.
        """
        if preds.features is None:
            raise SiteFusionError("the predictions hold no expert outputs")
        f = preds.features
        part = ExpertFeatures(
            tuple(np.asarray(f.ids)[rows].tolist()), f.features[rows], f.logits[rows]
        )
        own = {key: v[rows] for key, v in preds.own.get(method, {}).items()}
        return self.methods[method].predict(part, own, mask, calibrated=calibrated)

    def _select(self, methods: Collection[str] | None) -> list[Method]:
        if methods is None:
            return list(self.methods.values())
        unknown = sorted(set(methods) - set(self.methods))
        if unknown:
            raise ArtifactError(
                f"{self.root}: the run holds no method {', '.join(unknown)}; "
                f"it has {', '.join(self.methods)}"
            )
        return [m for m in self.methods.values() if m.name in methods]

    @staticmethod
    def _store(out: RunPredictions, name: str, result: MethodOutput | None) -> None:
        if result is None:
            return
        out.probs[name] = result.probs
        if result.weights is not None:
            out.attention[name] = result.weights
