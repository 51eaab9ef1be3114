"""Every ``docs/*.md`` a message or docstring of the package cites exists (issue 31, class 10:
the plain-text refusal cited a docs/federated.md that was never written)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cited_docs_exist() -> None:
    cited = {
        (path.relative_to(ROOT), name)
        for path in (ROOT / "sitefusion").rglob("*.py")
        for name in re.findall(r"docs/[\w./-]+\.md", path.read_text(encoding="utf-8"))
    }
    missing = sorted(f"{where}: {name}" for where, name in cited if not (ROOT / name).is_file())
    assert not missing, missing
