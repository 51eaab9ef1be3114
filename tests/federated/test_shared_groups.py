"""Groups (patients, lesions) held by more than one site: found by keyed hashes, placed by their
home site, so a federation splits exactly as the whole manifest split in one place."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from sitefusion.config import Config, replace
from sitefusion.data import load_manifest, load_splits, make_splits, split_manifest_by_site
from sitefusion.errors import ConfigError, FederationError, SiteFusionError
from sitefusion.federated import Payload, SiteFailure, SiteSetup, write_group_key
from sitefusion.workflows import LocalTransport, federate, handle
from sitefusion.workflows.federation import reconcile_groups

STOP = "StopAfterPrepare Error: the test ends the run here"


class _UntilPrepare(LocalTransport):
    """The sites up to their prepare phase (or ``last``); every later phase fails at once."""

    def __init__(self, setups: list[SiteSetup], last: str = "prepare") -> None:
        super().__init__(setups)
        order = ("groups", "home_splits", "prepare", "fedavg_round", "expert")
        self.phases = order[: order.index(last) + 1]

    def ask(
        self, payloads: Mapping[str, Payload], timeout: float, message_type: str
    ) -> dict[str, Payload | SiteFailure]:
        if any(p.meta.get("phase") not in self.phases for p in payloads.values()):
            return {site: SiteFailure.error(STOP) for site in payloads}
        return super().ask(payloads, timeout, message_type)


def _shared_manifest(synthetic_2d: Path, folder: Path) -> Path:
    """The synthetic set (two images per lesion) with lesions that two sites hold: a site_a
    lesion with three more images at site_b (home site_b), another with two at site_b (a tie:
    home site_a, the first name), and a site_c lesion with one image at site_a (home site_c)."""
    with synthetic_2d.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_group: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_group.setdefault(r["group"], []).append(r)
    groups = {
        site: [g for g, rs in by_group.items() if rs[0]["site"] == site]
        for site in ("site_a", "site_b", "site_c")
    }
    a1, a2 = groups["site_a"][:2]
    c1 = groups["site_c"][0]
    donors_b = [r for g in groups["site_b"][:3] for r in by_group[g]]  # 6 rows of site_b
    moves = [(row, a1) for row in donors_b[:3]] + [(row, a2) for row in donors_b[3:5]]
    moves.append((by_group[groups["site_a"][2]][0], c1))
    for row, group in moves:
        row["group"] = group
        row["label"] = by_group[group][0]["label"]
    out = folder / "manifest.csv"
    folder.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def _setups(manifest: Path, root: Path, tmp_path: Path, key: Path | None) -> list[SiteSetup]:
    return [
        SiteSetup(site, path, root, tmp_path / "sites" / site / "work", key)
        for site, path in split_manifest_by_site(manifest, tmp_path / "sites").items()
    ]


def _federated_splits(out: Path, setups: list[SiteSetup]) -> dict[str, str]:
    run_id = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["run_id"]
    merged: dict[str, str] = {}
    for setup in setups:
        merged.update(load_splits(setup.workdir / run_id / "splits.csv"))
    return merged


def test_reconcile_groups_gives_the_site_with_most_images_then_the_first_name() -> None:
    home, away = reconcile_groups(
        {"b": {"x": 2, "y": 1, "z": 4}, "a": {"x": 1, "y": 1}, "c": {"z": 4}}
    )
    assert home == {"x": "b", "y": "a", "z": "b"}
    assert away == {"a": {"x"}, "b": {"y"}, "c": {"z"}}


@pytest.mark.slow
def test_groups_held_by_two_sites_get_the_split_of_the_whole_manifest(
    federated_cfg: Config, synthetic_2d: Path, tmp_path: Path
) -> None:
    manifest = _shared_manifest(synthetic_2d, tmp_path / "data")
    cfg = replace(federated_cfg, data=replace(federated_cfg.data, root=str(synthetic_2d.parent)))
    central = make_splits(
        load_manifest(manifest, cfg.data, image_root=synthetic_2d.parent), cfg.split
    )
    key = write_group_key(tmp_path / "group.key")
    setups = _setups(manifest, synthetic_2d.parent, tmp_path, key)
    out = tmp_path / "run"
    with pytest.raises(FederationError, match="StopAfterPrepare"):
        federate(cfg, out, _UntilPrepare(setups))
    assert _federated_splits(out, setups) == central
    record = json.loads((out / "federation" / "groups.json").read_text(encoding="utf-8"))
    assert record["reconciled"] and record["shared_groups"] == 3
    # site_a holds a1 (home site_b) and c1 (home site_c); site_b holds a2 (home site_a).
    assert record["placed_by_home_site"] == {"site_a": 2, "site_b": 1, "site_c": 0}
    raw = (out / "federation" / "messages.jsonl").read_text(encoding="utf-8")
    assert "site_a_g" not in raw and "site_c_g" not in raw  # only keyed hashes travelled

    # Without a key every site splits its own groups: the shared lesions' images can then sit
    # in different splits at two sites (what the key prevents), and the run says so.
    plain = tmp_path / "plain"
    setups = _setups(manifest, synthetic_2d.parent, plain, None)
    with pytest.raises(FederationError, match="StopAfterPrepare"):
        federate(cfg, plain / "run", _UntilPrepare(setups))
    record = json.loads((plain / "run" / "federation" / "groups.json").read_text(encoding="utf-8"))
    assert record == {"reconciled": False}
    assert _federated_splits(plain / "run", setups) != central


@pytest.mark.slow
def test_sites_with_different_or_missing_keys_are_refused_before_any_split(
    federated_cfg: Config, site_setups: list[SiteSetup], tmp_path: Path
) -> None:
    other = write_group_key(tmp_path / "other.key")
    mixed = [dataclasses.replace(site_setups[0], group_key=other), *site_setups[1:]]
    with pytest.raises(FederationError, match="different group keys"):
        federate(federated_cfg, tmp_path / "a", LocalTransport(mixed))
    missing = [dataclasses.replace(site_setups[0], group_key=None), *site_setups[1:]]
    with pytest.raises(FederationError, match=r"site\(s\) site_a hold no group key"):
        federate(federated_cfg, tmp_path / "b", LocalTransport(missing))
    assert not list((tmp_path / "sites").glob("*/work/*/splits.csv"))


def test_a_short_or_unreadable_group_key_is_refused_when_the_site_starts(
    site_setups: list[SiteSetup], tmp_path: Path
) -> None:
    setup = site_setups[0]
    base = {"site": setup.site, "manifest": str(setup.manifest), "workdir": str(setup.workdir)}
    short = tmp_path / "short.key"
    short.write_text("abc\n", encoding="ascii")
    with pytest.raises(ConfigError, match=r"short\.key.*3 bytes.*at least 16"):
        SiteSetup.from_node_config({**base, "group_key": str(short)})
    with pytest.raises(ConfigError, match=r"missing\.key.*cannot be read"):
        SiteSetup.from_node_config({**base, "group_key": str(tmp_path / "missing.key")})
    loaded = SiteSetup.from_node_config({**base, "group_key": str(setup.group_key)})
    assert loaded.read_group_key() == setup.read_group_key()
    assert f'group_key="{setup.group_key}"' in setup.node_config()


def test_a_phase_before_prepare_is_refused_rather_than_splitting_again(
    federated_cfg: Config, site_setups: list[SiteSetup]
) -> None:
    from sitefusion.config import config_to_dict

    meta = {
        "phase": "expert",
        "run_id": "abcdef123456",
        "config": config_to_dict(federated_cfg),
        "sites": ["site_a", "site_b", "site_c"],
    }
    with pytest.raises(SiteFusionError, match=r"no splits\.csv"):
        handle(site_setups[0], Payload(meta))
    assert not (site_setups[0].workdir / "abcdef123456" / "splits.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize("start", ["initial", "fedavg"])
def test_federated_experts_are_the_central_experts_bit_for_bit(
    federated_cfg: Config, synthetic_2d: Path, tmp_path: Path, start: str
) -> None:
    """Same config, rows, split and initial weights: a site's expert trained at the site is the
    one central training makes (so a difference between the tables is federation's, not
    the data's). With shared lesions, which only the group key makes split alike. With
    ``expert.start: fedavg`` the federation's FedAvg rounds run first and every site
    fine-tunes from their model, as central training fine-tunes from its simulated rounds."""
    import torch
    from safetensors.torch import load_file

    from sitefusion.workflows import train_run

    manifest = _shared_manifest(synthetic_2d, tmp_path / "data")
    cfg = replace(
        federated_cfg,
        data=replace(federated_cfg.data, root=str(synthetic_2d.parent), manifest=str(manifest)),
        expert=replace(federated_cfg.expert, start=start),
        fusion=replace(federated_cfg.fusion, cross_fit=start == "initial"),
        baselines=replace(federated_cfg.baselines, fedavg=True),
    )
    sites = ["site_a", "site_b", "site_c"]
    # The per-site pipeline refuses experts that start from FedAvg (one site cannot build the
    # FedAvg model), so that case trains the whole central chain.
    train_run(cfg, tmp_path / "central", sites=sites if start == "initial" else None)
    setups = _setups(manifest, synthetic_2d.parent, tmp_path, write_group_key(tmp_path / "k"))
    out = tmp_path / "run"
    with pytest.raises(FederationError, match="StopAfterPrepare"):
        federate(cfg, out, _UntilPrepare(setups, last="expert"))
    for site in sites:
        a = load_file(tmp_path / "central" / "experts" / f"{site}.safetensors")
        b = load_file(out / "experts" / f"{site}.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), site
        assert json.loads((out / "experts" / f"{site}.json").read_text())["start"] == start
    if start == "fedavg":  # the model the experts started from is the same on both sides
        a = load_file(tmp_path / "central" / "baselines" / "fedavg.safetensors")
        b = load_file(out / "baselines" / "fedavg.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a)
