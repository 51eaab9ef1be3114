"""Model cards of finished runs (Mitchell et al., 2019): ``model_card.json``, checked by the
shipped JSON schema ``model_card.schema.json``, and ``MODEL_CARD.md`` for clinicians.

``write_model_card(run_dir, out_dir, report_dir=None)`` is the entry point (``sitefusion card``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sitefusion.atomic import atomic_write
from sitefusion.card.about import ABOUT_KEYS, About, read_about
from sitefusion.card.build import CARD_FORMAT, CARD_VERSION, LimitThresholds, build_model_card
from sitefusion.card.render import render_model_card

__all__ = [
    "ABOUT_KEYS",
    "CARD_FORMAT",
    "CARD_VERSION",
    "SCHEMA_PATH",
    "About",
    "LimitThresholds",
    "build_model_card",
    "read_about",
    "render_model_card",
    "write_model_card",
]

#: The JSON schema every ``model_card.json`` follows (shipped with the package).
SCHEMA_PATH = Path(__file__).with_name("model_card.schema.json")


def write_model_card(
    run_dir: str | Path,
    out_dir: str | Path,
    report_dir: str | Path | None = None,
    *,
    limits: LimitThresholds | None = None,
    about: str | Path | None = None,
) -> tuple[Path, Path, dict[str, Any]]:
    """Write ``MODEL_CARD.md`` and ``model_card.json`` for the run into ``out_dir``.

    ``about``: the publisher's YAML file (:mod:`sitefusion.card.about`). Returns the two paths
    and the card. Both files are written atomically.

    Raises:
        ArtifactError: see :func:`build_model_card`.
        OSError: ``out_dir`` cannot be written.
    """
    card = build_model_card(run_dir, report_dir, limits=limits, about=about)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "MODEL_CARD.md", out / "model_card.json"
    with atomic_write(js) as fh:
        json.dump(card, fh, indent=2)
        fh.write("\n")
    with atomic_write(md) as fh:
        fh.write(render_model_card(card))
    return md, js, card
