"""Phases before any network trains: the groups held by two sites, then each site's split and
normalizer.

``groups``
    with a group key (:class:`~sitefusion.federated.setup.SiteSetup`): one keyed hash
    (HMAC-SHA256 under the consortium's key, which the coordinator does not hold) per group of
    the site's rows, with its number of images, and a check value of the key. The coordinator
    finds the groups held by more than one site and gives each its *home site* (most images;
    ties by site name, :func:`reconcile_groups`), as a central split does. Without a key:
    nothing (groups are not reconciled).
``home_splits``
    (only sites that are home to a shared group) the split the site gives those groups.
``prepare``
    the site's run directory: its rows of the manifest (other sites' rows are dropped before
    any image is read), the split by group with the leakage check (a shared group at home
    elsewhere gets its home site's split, so the split equals the one of the whole manifest in
    one place), and its normalizer fitted on its training split. Reply: the normalizer's JSON
    and the class counts per split; the coordinator writes the bank and the schema.
"""

from __future__ import annotations

import hashlib
import hmac
import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sitefusion.data import Manifest, group_splits, load_manifest
from sitefusion.errors import FederationError, SiteFusionError
from sitefusion.federated.coordinator import Coordinator
from sitefusion.federated.messages import Reply, Request
from sitefusion.federated.phase import OncePhase
from sitefusion.federated.setup import GROUP_KEY_HELP
from sitefusion.normalization import NormalizerBank
from sitefusion.normalization.registry import normalizer_class
from sitefusion.training.stages import fit_normalizers
from sitefusion.workflows.federation.site import SiteSession
from sitefusion.workflows.train import only_site, resolve_data

__all__ = ["Groups", "HomeSplits", "Prepare", "reconcile_groups"]

_KEY_CHECK = b"sitefusion group key check"


def reconcile_groups(
    held: Mapping[str, Mapping[str, int]],
) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Home sites of groups held by several sites, from ``{site: {group hash: images}}``.

    A group's home is the site with most of its images, ties broken by site name: the rule of
    :func:`~sitefusion.data.splits.group_splits` for a manifest split in one place. Returns
    ``({hash: home site}, {site: hashes it holds that are at home elsewhere})``.
    """
    counts: dict[str, dict[str, int]] = {}
    for site, groups in held.items():
        for token, n in groups.items():
            counts.setdefault(token, {})[site] = int(n)
    home = {t: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for t, c in counts.items()}
    away = {site: {t for t in groups if home[t] != site} for site, groups in held.items()}
    return home, away


def _tokens(site: SiteSession) -> tuple[Manifest, dict[str, str]]:
    """The site's manifest rows and ``{keyed hash: group}`` of its groups (empty without a key)."""
    manifest_path, root = resolve_data(site.cfg, site.root, generate=False)
    manifest = only_site(
        load_manifest(
            manifest_path,
            site.cfg.data,
            image_root=root,
            check_files=False,
            allow_outside_root=site.cfg.data.allow_outside_root,
        ),
        site.name,
    )
    key = site.setup.read_group_key()
    if key is None:
        return manifest, {}
    return manifest, {
        hmac.new(key, r.group.encode("utf-8"), hashlib.sha256).hexdigest()[:32]: r.group
        for r in manifest.records
    }


def _groups_of(
    site: SiteSession, tokens: dict[str, str], wanted: list[str], what: str
) -> list[str]:
    unknown = [t for t in wanted if t not in tokens]
    if unknown:
        raise SiteFusionError(
            f"site {site.name}: the coordinator's {what} names {len(unknown)} group hash(es) "
            "this site does not hold (was the manifest or the group key changed mid-run?)"
        )
    return [tokens[t] for t in wanted]


def _prepared(co: Coordinator) -> bool:
    return co.run.has("schema.json")


class GroupsRequest(Request):
    """Asks for the keyed hashes of the site's groups."""


class GroupsReply(Reply):
    """One keyed hash per group (in hash order) with its image count, and the key's check."""

    key_check: str | None
    tokens: list[str]
    counts: list[int]


class Groups(OncePhase[GroupsRequest, GroupsReply]):
    """Which groups more than one site holds (see the module docstring)."""

    name = "groups"
    kind = "query"
    request_type = GroupsRequest
    reply_type = GroupsReply

    def done(self, co: Coordinator) -> bool:
        return _prepared(co)

    def request(self, co: Coordinator, site: str) -> GroupsRequest:
        return GroupsRequest(**co.fields(self))

    def handle(self, site: SiteSession, request: GroupsRequest) -> GroupsReply:
        key = site.setup.read_group_key()
        if key is None:
            return GroupsReply(
                site=site.name, phase=self.name, key_check=None, tokens=[], counts=[]
            )
        manifest, tokens = _tokens(site)
        per_group = Counter(r.group for r in manifest.records)
        order = sorted(tokens)  # hash order: says nothing about the manifest's row order
        return GroupsReply(
            site=site.name,
            phase=self.name,
            key_check=hmac.new(key, _KEY_CHECK, hashlib.sha256).hexdigest()[:16],
            tokens=order,
            counts=[per_group[tokens[t]] for t in order],
        )

    def combine(self, co: Coordinator, replies: dict[str, GroupsReply]) -> None:
        checks = {s: replies[s].key_check for s in co.sites}
        keyless = [s for s, c in checks.items() if c is None]
        co.memory["fixed"] = {s: {} for s in co.sites}
        if len(keyless) == len(co.sites):
            co.say(
                "  [yellow]groups: the sites hold no group key, so a patient or lesion held by "
                "two sites is split at each independently (it can be in training at one and in "
                f"test at the other); {GROUP_KEY_HELP}[/]"
            )
            co.run.write_json("federation/groups.json", {"reconciled": False})
            co.memory["shared"] = {}
            return
        if keyless:
            raise FederationError(
                f"groups: site(s) {', '.join(keyless)} hold no group key while the others do; "
                "start every site with the same --group-key file"
            )
        if len(set(checks.values())) > 1:
            raise FederationError(
                "groups: the sites hold different group keys (their key checks differ); start "
                "every site with the same --group-key file"
            )
        held = {s: dict(zip(replies[s].tokens, replies[s].counts, strict=True)) for s in co.sites}
        home, away = reconcile_groups(held)
        shared = {t for t in home if sum(t in h for h in held.values()) > 1}
        co.memory["shared"] = {t: home[t] for t in sorted(shared)}
        co.memory["away"] = away


class HomeSplitsRequest(Request):
    """The shared groups at home at this site, and the ones at home elsewhere."""

    home: list[str]
    away: list[str]


class HomeSplitsReply(Reply):
    """The split the site gives each shared group at home here (hash -> split)."""

    splits: dict[str, str]


class HomeSplits(OncePhase[HomeSplitsRequest, HomeSplitsReply]):
    """The home sites' splits of the shared groups, for every site that holds them."""

    name = "home_splits"
    kind = "query"
    request_type = HomeSplitsRequest
    reply_type = HomeSplitsReply

    def done(self, co: Coordinator) -> bool:
        return _prepared(co)

    def targets(self, co: Coordinator) -> list[str]:
        return sorted(set(co.memory.get("shared", {}).values()))

    def request(self, co: Coordinator, site: str) -> HomeSplitsRequest:
        shared = co.memory["shared"]
        return HomeSplitsRequest(
            **co.fields(
                self,
                home=sorted(t for t, h in shared.items() if h == site),
                away=sorted(co.memory["away"][site]),
            )
        )

    def handle(self, site: SiteSession, request: HomeSplitsRequest) -> HomeSplitsReply:
        manifest, tokens = _tokens(site)
        away = _groups_of(site, tokens, request.away, "away list")
        _groups_of(site, tokens, request.home, "home list")
        splits = group_splits(manifest, site.cfg.split, exclude=frozenset(away))
        return HomeSplitsReply(
            site=site.name, phase=self.name, splits={t: splits[tokens[t]] for t in request.home}
        )

    def combine(self, co: Coordinator, replies: dict[str, HomeSplitsReply]) -> None:
        if "away" not in co.memory:  # no group key: nothing was reconciled
            return
        split_of = {t: v for r in replies.values() for t, v in r.splits.items()}
        away = co.memory["away"]
        co.memory["fixed"] = {s: {t: str(split_of[t]) for t in sorted(away[s])} for s in co.sites}
        shared = co.memory["shared"]
        co.run.write_json(
            "federation/groups.json",
            {
                "reconciled": True,
                "shared_groups": len(shared),
                "placed_by_home_site": {s: len(co.memory["fixed"][s]) for s in co.sites},
            },
        )
        co.say(
            f"groups: {len(shared)} group(s) held by more than one site, each split at its home "
            "site"
        )


class PrepareRequest(Request):
    """The splits of the site's groups that are at home elsewhere (hash -> split)."""

    fixed: dict[str, str]


class PrepareReply(Reply):
    """The site's normalizer (JSON) and its class counts per split."""

    counts: dict[str, list[int]]
    normalizer: str


class Prepare(OncePhase[PrepareRequest, PrepareReply]):
    """Each site's split and normalizer; the coordinator's bank and schema."""

    name = "prepare"
    kind = "query"
    request_type = PrepareRequest
    reply_type = PrepareReply

    def done(self, co: Coordinator) -> bool:
        return _prepared(co)

    def request(self, co: Coordinator, site: str) -> PrepareRequest:
        return PrepareRequest(**co.fields(self, fixed=co.memory.get("fixed", {}).get(site, {})))

    def handle(self, site: SiteSession, request: PrepareRequest) -> PrepareReply:
        fixed: dict[str, str] = {}
        if request.fixed:
            _, tokens = _tokens(site)
            groups = _groups_of(site, tokens, list(request.fixed), "fixed splits")
            fixed = {g: request.fixed[t] for g, t in zip(groups, request.fixed, strict=True)}
        run, data = site.data(fixed_splits=fixed)
        fit_normalizers(site.cfg, run, data)
        k = len(data.manifest.classes)
        counts = {
            split: np.bincount(data.labels[data.rows(split)], minlength=k).astype(int).tolist()
            for split in ("train", "val", "fusion", "test")
        }
        normalizer = run.verify(f"normalizers/{site.name}.json").read_text(encoding="utf-8")
        return PrepareReply(site=site.name, phase=self.name, counts=counts, normalizer=normalizer)

    def combine(self, co: Coordinator, replies: dict[str, PrepareReply]) -> None:
        counts = {s: replies[s].counts for s in co.sites}
        cls = normalizer_class(co.cfg.normalization.kind)
        normalizers = {}
        with tempfile.TemporaryDirectory() as tmp:
            for site in co.sites:
                path = Path(tmp) / f"{site}.json"
                path.write_text(replies[site].normalizer, encoding="utf-8")
                normalizers[site] = cls.load(path)
        # A federation has no pooled normalizer (no images in one place); the bank's format
        # needs one, so it holds the largest site's, which no policy of a federated run uses
        # (unseen_policy 'pooled' is refused).
        largest = max(co.sites, key=lambda s: sum(counts[s]["train"]))
        bank = NormalizerBank.from_normalizers(
            normalizers,
            pooled=normalizers[largest],
            unseen_policy=co.cfg.normalization.unseen_policy,
        )
        bank.save(co.run.root / "normalizers")
        for path in sorted((co.run.root / "normalizers").glob("*.json")):
            co.run.adopt(f"normalizers/{path.name}")
        d = co.cfg.data
        co.run.write_json(
            "schema.json",
            {
                "columns": {
                    "image": d.image,
                    "label": d.label,
                    "site": d.site,
                    "group": d.group,
                    "id": d.id,
                },
                "classes": list(d.classes or ()),
                "sites": co.sites,
                "experts": co.sites,
                "spatial_size": list(d.spatial_size),
                "channels": d.channels,
                "split_counts": {
                    s: {split: int(sum(c)) for split, c in counts[s].items()} for s in co.sites
                },
                "class_counts": counts,
                "pooled_normalizer": f"none (federated); normalizers/_pooled.json is {largest}'s",
            },
        )
        co.say("prepare: every site split its data and fitted its normalizer")
