"""A site's side of the federation: its view of its own data, and one phase per message.

A site is set up by its operator (``sitefusion site``), not by the coordinator: its name, its
manifest and image root, and a work folder, all local paths that never leave the site
(:class:`~sitefusion.federated.setup.SiteSetup`). :func:`handle` decodes a coordinator message
into its phase's typed request (refusing a malformed one), lets the phase answer with
:class:`SiteSession` (the site's run directory in ``<workdir>/<run id>``, its rows of the
manifest only, its normalizer, its feature caches) and encodes the typed reply. What each phase
sends back is described in docs/architecture.md ("What a federated message carries"): no image,
no image id or group id, no feature vector of an image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from sitefusion.config import Config, config_from_dict, replace
from sitefusion.errors import ConfigError, SiteFusionError
from sitefusion.experts import build_expert
from sitefusion.federated.messages import Request
from sitefusion.federated.payload import Payload
from sitefusion.federated.setup import SiteSetup
from sitefusion.federated.transport import HELLO
from sitefusion.normalization import NormalizerBank
from sitefusion.rundir import RunDir
from sitefusion.training.context import HeadRows, RowInfo, RunData, normalize_rows, select_head_rows
from sitefusion.training.features import ExpertFeatures, load_feature_cache
from sitefusion.training.stages import cache_features, fit_normalizers, set_threads
from sitefusion.workflows.train import prepare_run

__all__ = ["SiteSession", "handle", "site_config"]

_RUN_ID = re.compile(r"^[0-9a-f]{6,64}$")


def site_config(setup: SiteSetup, raw: Mapping[str, Any]) -> Config:
    """The coordinator's config with this site's own data paths."""
    cfg = config_from_dict(dict(raw), "<coordinator config>")
    if cfg.data.source != "csv":
        raise ConfigError(
            f"federated sites read their own CSV manifest; the config's data.source is "
            f"{cfg.data.source!r}"
        )
    data = replace(cfg.data, root=str(setup.root), manifest=str(setup.manifest))
    return replace(cfg, data=data)


class SiteSession:
    """One message's view of the site: the request's config with local paths, the site's place
    in the federation, its run directory and data (read once, when a phase first needs them)."""

    def __init__(self, setup: SiteSetup, request: Request) -> None:
        self.setup = setup
        self.name = setup.site
        self.cfg = site_config(setup, request.config)
        set_threads(self.cfg)
        if not _RUN_ID.match(request.run_id):
            raise ConfigError(f"coordinator message: run_id {request.run_id!r} is not a run id")
        self.root = setup.workdir / request.run_id
        self.sites = list(request.sites) or [setup.site]
        self.num_classes = len(self.cfg.data.classes or ())
        self._data: dict[bool, tuple[RunDir, RunData]] = {}

    def data(
        self, *, images: bool = True, fixed_splits: Mapping[str, str] | None = None
    ) -> tuple[RunDir, RunData]:
        """The site's run directory and data. Only the ``prepare`` phase (``fixed_splits``
        given) makes the splits; a later phase without them is an error, never a second,
        different split."""
        if fixed_splits is None and not (self.root / "splits.csv").is_file():
            raise SiteFusionError(
                f"site {self.name}: {self.root} has no splits.csv (the prepare phase has not run "
                "here, or the site's work folder was removed); rerun the federation from a new "
                "--out"
            )
        if images not in self._data or fixed_splits is not None:
            self._data[images] = prepare_run(
                self.cfg, self.root, site=self.name, fixed_splits=fixed_splits, load_images=images
            )
        return self._data[images]

    @property
    def run(self) -> RunDir:
        """The site's run directory."""
        return RunDir(self.root)

    def bank(self) -> NormalizerBank:
        """The site's fitted normalizer bank."""
        run, data = self.data()
        return fit_normalizers(self.cfg, run, data)

    def train_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """The site's normalized training images and labels, cached in its work folder."""
        rel = "federation/fedavg_inputs.safetensors"
        run = self.run
        if not run.has(rel):  # the first round: read and normalize the images once
            _, data = self.data()
            rows = data.rows("train")
            x = normalize_rows(self.bank(), data, rows)
            run.write_tensors(
                rel, {"x": torch.from_numpy(x), "y": torch.from_numpy(data.labels[rows])}
            )
        cached = run.read_tensors(rel)
        return cached["x"].numpy(), cached["y"].numpy()

    def cache_features(self, tag: str, experts: dict[str, torch.Tensor]) -> None:
        """Every image's features under the experts ``tag`` (``<site>.<key>`` tensors)."""
        rel = f"federation/features-{tag}.safetensors"
        run, data = self.data()
        bank = fit_normalizers(self.cfg, run, data)
        if run.has(rel):
            return
        networks = []
        for site in self.sites:
            expert = build_expert(self.cfg, self.num_classes)
            prefix = f"{site}."
            expert.load_state_dict(
                {k[len(prefix) :]: v for k, v in experts.items() if k.startswith(prefix)}
            )
            networks.append(expert.eval())
        cache_features(self.cfg, run, data, bank, rel, networks)

    def head_cache(self, tag: str) -> tuple[ExpertFeatures, HeadRows]:
        """The cached features of experts ``tag`` and the fusion's rows among them."""
        run, data = self.data(images=False)
        rel = f"federation/features-{tag}.safetensors"
        if not run.has(rel):
            raise SiteFusionError(
                f"{run.root}: no cached features for experts {tag}; the coordinator must run "
                "the head_setup phase first"
            )
        feats = load_feature_cache(run, rel)
        info = {
            r.id: RowInfo(r.site, int(label), r.group, data.splits[r.id])
            for r, label in zip(data.manifest.records, data.labels, strict=True)
        }
        return feats, select_head_rows(feats.ids, info, self.sites, bool(self.cfg.fusion.cross_fit))

    def fusion_split(self, feats: ExpertFeatures) -> np.ndarray:
        """``[N]`` bool: which rows of ``feats`` are fusion-split images."""
        _, data = self.data(images=False)
        return np.array([data.splits[i] == "fusion" for i in feats.ids])

    def finetune_inputs(self, tag: str) -> dict[str, torch.Tensor]:
        """The head rows' normalized images, labels and masks, cached at the site."""
        rel = "federation/finetune_inputs.safetensors"
        run = self.run
        if not run.has(rel):  # the first round: the head rows' images, kept at the site
            feats, rows = self.head_cache(tag)
            _, data = self.data()
            pos = {rid: i for i, rid in enumerate(data.ids)}
            data_rows = np.array([pos[feats.ids[j]] for j in rows.positions])
            x = normalize_rows(self.bank(), data, data_rows)
            run.write_tensors(
                rel,
                {
                    "x": torch.from_numpy(x),
                    "y": torch.from_numpy(rows.labels.astype(np.int64)),
                    "presence": torch.from_numpy(rows.presence),
                },
            )
        return run.read_tensors(rel)


def handle(setup: SiteSetup, payload: Payload) -> Payload:
    """Answer one coordinator message at this site (``payload.meta["phase"]`` names the phase).

    Raises:
        ConfigError: an unknown phase.
        FederationError: a malformed message (a missing, unknown or mistyped field).
        SiteFusionError: the site's own data or work folder has a problem (the message names it).
    """
    from sitefusion.workflows.federation.registry import SITE_PHASES  # lazy: the phases import this

    name = str(payload.meta.get("phase", ""))
    if name == HELLO:
        return Payload(meta={"site": setup.site, "phase": HELLO})
    phase = SITE_PHASES.get(name)
    if phase is None:
        raise ConfigError(
            f"coordinator message: unknown phase {name!r}; valid: {', '.join(SITE_PHASES)}"
        )
    request = phase.request_type.from_payload(payload, f"coordinator message {name!r}")
    return phase.handle(SiteSession(setup, request), request).to_payload()
