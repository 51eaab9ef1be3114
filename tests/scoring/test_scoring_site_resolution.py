"""Site resolution: the flag wins, then InstitutionName, StationName, Manufacturer+Model."""

from __future__ import annotations

import pytest

from sitefusion.errors import UnknownChoiceError
from sitefusion.scoring import SITE_TAGS, check_site_flag, check_site_map, resolve_site

SITE_MAP = {
    "InstitutionName": {"St Mary": "site_a"},
    "StationName": {"CT01": "site_b"},
    "Manufacturer ManufacturerModelName": {"ACME Scanner9000": "site_c"},
}


def test_flag_wins_over_tags() -> None:
    meta = {"InstitutionName": "St Mary"}
    r = resolve_site(meta, flag="site_d", site_map=SITE_MAP)
    assert (r.site, r.source) == ("site_d", "flag")


def test_tags_are_tried_in_order() -> None:
    meta = {
        "InstitutionName": "St Mary",
        "StationName": "CT01",
        "Manufacturer": "ACME",
        "ManufacturerModelName": "Scanner9000",
    }
    assert resolve_site(meta, site_map=SITE_MAP).source == "tag:InstitutionName"
    meta["InstitutionName"] = "Elsewhere"
    r = resolve_site(meta, site_map=SITE_MAP)
    assert (r.site, r.source) == ("site_b", "tag:StationName")
    del meta["StationName"]
    r = resolve_site(meta, site_map=SITE_MAP)
    assert (r.site, r.source) == ("site_c", "tag:Manufacturer ManufacturerModelName")


def test_values_are_compared_without_padding() -> None:
    r = resolve_site(
        {"InstitutionName": "St Mary "}, site_map={"InstitutionName": {" St Mary": "x"}}
    )
    assert r.site == "x"


def test_combined_key_needs_both_values() -> None:
    r = resolve_site({"Manufacturer": "ACME"}, site_map=SITE_MAP)
    assert (r.site, r.source) == (None, "unseen-policy")


def test_unknown_values_and_other_formats_fall_back_to_the_unseen_policy() -> None:
    assert resolve_site({"InstitutionName": "Nowhere"}, site_map=SITE_MAP).source == (
        "unseen-policy"
    )
    assert resolve_site({"format": "png"}, site_map=SITE_MAP).site is None
    assert resolve_site({}, site_map=None).source == "unseen-policy"


def test_site_map_with_an_unknown_tag_is_refused_with_a_suggestion() -> None:
    with pytest.raises(UnknownChoiceError, match="did you mean 'InstitutionName'"):
        check_site_map({"InstitutionNam": {"x": "site_a"}})
    check_site_map({tag: {} for tag in SITE_TAGS})


def test_site_flag_must_be_a_run_site() -> None:
    with pytest.raises(UnknownChoiceError, match="did you mean 'site_a'"):
        check_site_flag("site_aa", ("site_a", "site_b"))
    check_site_flag(None, ("site_a",))
    check_site_flag("site_b", ("site_a", "site_b"))
