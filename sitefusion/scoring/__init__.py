"""Batch scoring of studies with a trained run: discovery, site resolution, OOD, outputs,
explanations and DICOM SR.

``score_inputs(run_dir, inputs, out_dir)`` is the entry point (``sitefusion score``); the other
names are its parts, usable on their own.
"""

from sitefusion.scoring.batch import ScoreSummary, score_inputs
from sitefusion.scoring.discovery import Discovery, ScoreItem, discover_items, walk_inputs
from sitefusion.scoring.ood import MahalanobisOOD, fusion_split_features
from sitefusion.scoring.outputs import ScoreStore, rows_to_csv, score_columns
from sitefusion.scoring.redaction import Redactor, patient_identifiers
from sitefusion.scoring.site_resolution import (
    SITE_TAGS,
    SiteResolution,
    check_site_flag,
    check_site_map,
    resolve_site,
)

__all__ = [
    "SITE_TAGS",
    "Discovery",
    "MahalanobisOOD",
    "Redactor",
    "ScoreItem",
    "ScoreStore",
    "ScoreSummary",
    "SiteResolution",
    "check_site_flag",
    "check_site_map",
    "discover_items",
    "fusion_split_features",
    "patient_identifiers",
    "resolve_site",
    "rows_to_csv",
    "score_columns",
    "score_inputs",
    "walk_inputs",
]
