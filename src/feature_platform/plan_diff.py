"""A rollout's plan: Feast's registry diff, turned into changes a reviewer can act on.

`feast plan` prints a diff for people and always exits 0. This module reads the same
structured diff (`feast.diff.registry_diff.RegistryDiff`: each object with its current and
desired definition) and classifies every change:

- safe: a new entity, view, feature or service; a description, tag, owner or logging change; a
  longer ttl; a shorter ttl on a view no service uses;
- breaking: deleting or renaming an entity, view, feature or service; changing a feature's
  type; changing an entity's join key; shrinking the ttl of a view a service depends on.

Anything else is treated as breaking too, named as "not on the safe list": a change the
platform cannot show to be harmless is held for a person to allow. Adding is always fine;
removing or renaming needs a new version (a new view or service name) next to the old one.

The plan itself (`Plan`: its changes, counts, JSON and markdown) lives here too; finding the
diff of an environment is `rollout_plan`'s job.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BREAKING = 3
# Set to true (by the `allow-breaking-changes` label in CI) to apply breaking changes.
ALLOW_BREAKING_VAR = "ALLOW_BREAKING_CHANGES"

SAFE = "safe"
BREAKING = "breaking"

CREATE, UPDATE, DELETE = "create", "update", "delete"

# Spec fields that describe an object without changing what it serves (a feature
# service's logging_config says where served vectors are recorded).
METADATA_FIELDS = {"description", "tags", "owner", "logging_config"}
# Bookkeeping Feast keeps in some protos; never a change of definition.
IGNORED_FIELDS = {"project", "meta", "created_timestamp", "last_updated_timestamp"}
VIEW_TYPES = {"feature view", "on demand feature view", "stream feature view", "label view"}
# Deleting one of these breaks whoever reads it.
CONSUMED_TYPES = {"entity", "feature service", *VIEW_TYPES}


@dataclass(frozen=True)
class Finding:
    """One reason a change is safe or breaking."""

    kind: str
    detail: str
    breaking: bool


@dataclass
class Change:
    action: str  # create | update | delete
    object_type: str  # Feast's name: "entity", "feature view", ...
    name: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def classification(self) -> str:
        return BREAKING if any(f.breaking for f in self.findings) else SAFE

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.action, self.object_type, self.name)

    @property
    def label(self) -> str:
        """One line for logs: "delete feature view customer_txn_1h"."""
        return f"{self.action} {self.object_type} {self.name}"


@dataclass
class Plan:
    """What applying the repository would change in one environment."""

    environment: str
    project: str
    registry: str  # "initialized", or "empty" before the first apply
    changes: list[Change]
    breaking_allowed: bool = False

    @property
    def breaking(self) -> bool:
        return any(c.classification == BREAKING for c in self.changes)

    @property
    def exit_code(self) -> int:
        """0: nothing or only safe changes; 3: a breaking change is present."""
        return EXIT_BREAKING if self.breaking else EXIT_OK

    def counts(self) -> dict[str, int]:
        return {
            "created": sum(c.action == CREATE for c in self.changes),
            "updated": sum(c.action == UPDATE for c in self.changes),
            "deleted": sum(c.action == DELETE for c in self.changes),
            "safe": sum(c.classification == SAFE for c in self.changes),
            "breaking": sum(c.classification == BREAKING for c in self.changes),
        }

    def summary(self) -> str:
        counts = self.counts()
        return ", ".join(f"{counts[k]} {k}" for k in ("created", "updated", "deleted"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "project": self.project,
            "registry": self.registry,
            "breaking": self.breaking,
            "breaking_allowed": self.breaking_allowed,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "changes": [
                {**asdict(c), "classification": c.classification}
                for c in sorted(self.changes, key=_change_order)
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def markdown(self) -> str:
        return render_markdown(self)


def _change_order(change: Change) -> tuple[int, str, str, str]:
    return (
        0 if change.classification == BREAKING else 1,
        change.action,
        change.object_type,
        change.name,
    )


def render_markdown(plan: Plan) -> str:
    if not plan.changes:
        verdict = "no changes"
    elif plan.breaking:
        verdict = "**breaking**"
    else:
        verdict = "safe"
    lines = [
        f"### `{plan.environment}`: {verdict}",
        "",
        f"Project `{plan.project}`, registry {plan.registry}: {plan.summary()}.",
    ]
    if plan.changes:
        lines += ["", "| change | object | name | class | why |", "| --- | --- | --- | --- | --- |"]
        for change in sorted(plan.changes, key=_change_order):
            why = "; ".join(
                f"{'**' if f.breaking else ''}{f.detail}{'**' if f.breaking else ''}"
                for f in change.findings
            )
            lines.append(
                f"| {change.action} | {change.object_type} | `{change.name}` | "
                f"{change.classification} | {_cell(why)} |"
            )
    if plan.breaking:
        lines.append("")
        if plan.breaking_allowed:
            lines.append(
                f"Breaking changes are **allowed** for this rollout ({ALLOW_BREAKING_VAR}=true, "
                "set from the `allow-breaking-changes` label): apply will make them."
            )
        else:
            lines.append(
                "Breaking changes are **refused**: apply stops without changing anything. "
                "Prefer a new version (a new view or service name) next to the old one; "
                f"to go ahead anyway, label the pull request `allow-breaking-changes` "
                f"({ALLOW_BREAKING_VAR}=true)."
            )
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- classification ---------------------------------------------------------------------


def classify(registry_diff: Any) -> list[Change]:
    """Classify each created, updated or deleted object of a Feast RegistryDiff."""
    from feast.diff.property_diff import TransitionType
    from feast.feature_view import DUMMY_ENTITY_NAME

    diffs = [
        d
        for d in registry_diff.feast_object_diffs
        if d.name != DUMMY_ENTITY_NAME and d.transition_type != TransitionType.UNCHANGED
    ]
    desired = [
        d.new_feast_object
        for d in registry_diff.feast_object_diffs
        if d.new_feast_object is not None
    ]
    dependents = service_dependencies(desired)
    changes: list[Change] = []
    for d in diffs:
        object_type = d.feast_object_type.value
        if d.transition_type == TransitionType.CREATE:
            changes.append(
                Change(
                    CREATE, object_type, d.name, [Finding("created", f"new {object_type}", False)]
                )
            )
        elif d.transition_type == TransitionType.DELETE:
            changes.append(Change(DELETE, object_type, d.name, _deletion(object_type)))
        else:
            property_names = [p.property_name for p in d.feast_object_property_diffs]
            findings = _update_findings(
                object_type,
                d.name,
                d.current_feast_object,
                d.new_feast_object,
                property_names,
                dependents,
            )
            # No findings: Feast saw a difference in registry bookkeeping only.
            if findings:
                changes.append(Change(UPDATE, object_type, d.name, findings))
    _mark_renames(changes, {(d.feast_object_type.value, d.name): d for d in diffs})
    return changes


def _deletion(object_type: str) -> list[Finding]:
    if object_type in CONSUMED_TYPES:
        return [Finding("deleted", f"{object_type} deleted: its readers break", True)]
    return [Finding("not_on_safe_list", f"{object_type} deleted", True)]


def _mark_renames(changes: list[Change], diffs: dict[tuple[str, str], Any]) -> None:
    """A deletion paired with a creation of the same definition under another name."""
    created = [c for c in changes if c.action == CREATE]
    for gone in (c for c in changes if c.action == DELETE and c.object_type in CONSUMED_TYPES):
        old = diffs[(gone.object_type, gone.name)].current_feast_object
        for new_change in created:
            if new_change.object_type != gone.object_type:
                continue
            new = diffs[(new_change.object_type, new_change.name)].new_feast_object
            if _same_but_name(old, new):
                gone.findings = [
                    Finding(
                        "renamed",
                        f"{gone.object_type} renamed to `{new_change.name}`: readers of "
                        f"`{gone.name}` break",
                        True,
                    )
                ]
                new_change.findings = [
                    Finding(
                        "created",
                        f"new {new_change.object_type}, renamed from `{gone.name}`",
                        False,
                    )
                ]
                break


def _same_but_name(old: Any, new: Any) -> bool:
    old_spec, new_spec = _spec(old), _spec(new)
    for spec in (old_spec, new_spec):
        spec.name = ""
    return bool(
        old_spec.SerializeToString(deterministic=True)
        == new_spec.SerializeToString(deterministic=True)
    )


def _spec(obj: Any) -> Any:
    """A copy of the object's definition without registry bookkeeping."""
    proto = obj.to_proto()
    spec = proto.spec if "spec" in proto.DESCRIPTOR.fields_by_name else proto
    copy = type(spec)()
    copy.CopyFrom(spec)
    strip_bookkeeping(copy)
    return copy


def strip_bookkeeping(message: Any) -> None:
    """Clear, at any depth, what the registry stamps on stored copies: a data source
    embedded in a stored view carries its registration times, the repository's does not."""
    for descriptor, value in list(message.ListFields()):
        if descriptor.name in IGNORED_FIELDS:
            message.ClearField(descriptor.name)
        elif descriptor.message_type is None:
            continue
        elif descriptor.message_type.GetOptions().map_entry:
            if descriptor.message_type.fields_by_name["value"].message_type is not None:
                for item in value.values():
                    strip_bookkeeping(item)
        elif descriptor.is_repeated:
            for item in value:
                strip_bookkeeping(item)
        else:
            strip_bookkeeping(value)


def service_dependencies(objects: Iterable[Any]) -> dict[str, set[str]]:
    """View name -> the feature services that read it, directly or through an
    on-demand view computed from it."""
    from feast.feature_service import FeatureService
    from feast.on_demand_feature_view import OnDemandFeatureView

    objects = list(objects)
    odfv_sources = {
        o.name: set(o.source_feature_view_projections)
        for o in objects
        if isinstance(o, OnDemandFeatureView)
    }
    uses: dict[str, set[str]] = {}
    for service in (o for o in objects if isinstance(o, FeatureService)):
        for projection in service.feature_view_projections:
            for view in {projection.name, *odfv_sources.get(projection.name, set())}:
                uses.setdefault(view, set()).add(service.name)
    return uses


def _update_findings(
    object_type: str,
    name: str,
    current: Any,
    new: Any,
    property_names: Sequence[str],
    dependents: dict[str, set[str]],
) -> list[Finding]:
    findings: list[Finding] = []
    for prop in dict.fromkeys(property_names):
        if prop in IGNORED_FIELDS:
            continue
        if prop in METADATA_FIELDS:
            findings.append(Finding("metadata_changed", f"{prop} changed", False))
        elif object_type == "entity":
            findings += _entity_property(prop, current, new)
        elif object_type in VIEW_TYPES:
            findings += _view_property(prop, name, current, new, dependents)
        elif object_type == "feature service" and prop == "features":
            findings += _projections(
                current.feature_view_projections, new.feature_view_projections, "service"
            )
        elif object_type == "data source":
            findings.append(
                Finding("source_changed", f"{prop} changed: what views read changes", True)
            )
        else:
            findings.append(_unlisted(prop))
    return findings


def _unlisted(prop: str) -> Finding:
    return Finding("not_on_safe_list", f"{prop} changed: not on the safe list, review it", True)


def _entity_property(prop: str, current: Any, new: Any) -> list[Finding]:
    if prop == "join_key":
        return [
            Finding(
                "join_key_changed",
                f"join key {current.join_key} -> {new.join_key}: lookups by the old key break",
                True,
            )
        ]
    if prop == "value_type":
        return [
            Finding(
                "entity_type_changed",
                f"key type {current.value_type.name} -> {new.value_type.name}",
                True,
            )
        ]
    return [_unlisted(prop)]


def _view_property(
    prop: str, name: str, current: Any, new: Any, dependents: dict[str, set[str]]
) -> list[Finding]:
    if prop == "features":
        return _fields(current.features, new.features, "feature")
    if prop == "entity_columns":
        return _fields(current.entity_columns, new.entity_columns, "entity column")
    if prop == "entities":
        return [
            Finding(
                "entities_changed",
                f"entities {sorted(current.entities)} -> {sorted(new.entities)}",
                True,
            )
        ]
    if prop == "ttl":
        return [_ttl(name, current.ttl, new.ttl, dependents)]
    if prop == "online":
        if new.online:
            return [Finding("online_enabled", "now served online", False)]
        return [Finding("online_disabled", "no longer served online", True)]
    if prop == "sources":
        return _odfv_sources(current, new)
    if prop.startswith("feature_transformation") or prop in ("mode", "udf"):
        return [Finding("transformation_changed", f"{prop} changed: computed values change", True)]
    if prop in ("batch_source", "stream_source"):
        old_source, new_source = getattr(current, prop), getattr(new, prop)
        # Feast reports the stored copy's registration times as a difference.
        if (
            old_source is not None
            and new_source is not None
            and _spec(old_source) == _spec(new_source)
        ):
            return []
        return [Finding("source_changed", f"{prop} changed: what the view reads changes", True)]
    return [_unlisted(prop)]


def _duration(value: Any) -> str:
    seconds = int(value.total_seconds()) if value else 0
    if seconds == 0:
        return "unlimited"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _ttl(name: str, old: Any, new: Any, dependents: dict[str, set[str]]) -> Finding:
    old_s = old.total_seconds() if old else 0.0
    new_s = new.total_seconds() if new else 0.0
    change = f"ttl {_duration(old)} -> {_duration(new)}"
    # A ttl of 0 means no limit.
    if (new_s == 0 and old_s != 0) or (old_s != 0 and new_s > old_s):
        return Finding("ttl_extended", change, False)
    services = sorted(dependents.get(name, set()))
    if services:
        return Finding(
            "ttl_shortened",
            f"{change}, read by {', '.join(services)}: values older than "
            f"{_duration(new)} turn null",
            True,
        )
    return Finding("ttl_shortened", f"{change}, no service reads the view", False)


def _fields(old: Sequence[Any], new: Sequence[Any], what: str) -> list[Finding]:
    """Features (or entity columns) of a view: added, removed, renamed, retyped."""
    before = {f.name: f for f in old}
    after = {f.name: f for f in new}
    removed = [n for n in before if n not in after]
    added = [n for n in after if n not in before]
    findings: list[Finding] = []
    # One feature out and one of the same type in: a rename.
    if len(removed) == 1 and len(added) == 1 and before[removed[0]].dtype == after[added[0]].dtype:
        findings.append(
            Finding(
                f"{what.replace(' ', '_')}_renamed",
                f"{what} `{removed[0]}` renamed to `{added[0]}`: readers of the old name break",
                True,
            )
        )
        removed, added = [], []
    findings += [
        Finding(f"{what.replace(' ', '_')}_removed", f"{what} `{n}` removed", True) for n in removed
    ]
    findings += [
        Finding(f"{what.replace(' ', '_')}_added", f"{what} `{n}` added", False) for n in added
    ]
    for n in before.keys() & after.keys():
        if before[n].dtype != after[n].dtype:
            findings.append(
                Finding(
                    "feature_type_changed",
                    f"{what} `{n}` type {before[n].dtype} -> {after[n].dtype}",
                    True,
                )
            )
        elif before[n] != after[n]:
            findings.append(
                Finding("metadata_changed", f"{what} `{n}` description or tags changed", False)
            )
    return sorted(findings, key=lambda f: f.detail)


def _projections(old: Sequence[Any], new: Sequence[Any], owner: str) -> list[Finding]:
    """The feature views a service (or an on-demand view) reads, and which features."""
    before = {p.name_to_use(): p for p in old}
    after = {p.name_to_use(): p for p in new}
    findings = [
        Finding("feature_removed", f"{owner} no longer reads view `{n}`", True)
        for n in before
        if n not in after
    ]
    findings += [
        Finding("feature_added", f"{owner} reads view `{n}`", False)
        for n in after
        if n not in before
    ]
    for n in sorted(before.keys() & after.keys()):
        for f in _fields(before[n].features, after[n].features, "feature"):
            findings.append(Finding(f.kind, f"{n}: {f.detail}", f.breaking))
        if before[n].join_key_map != after[n].join_key_map:
            findings.append(Finding("join_key_changed", f"{n}: join key mapping changed", True))
    return findings


def _odfv_sources(current: Any, new: Any) -> list[Finding]:
    findings = _projections(
        list(current.source_feature_view_projections.values()),
        list(new.source_feature_view_projections.values()),
        "on-demand view",
    )
    old_requests = current.source_request_sources
    new_requests = new.source_request_sources
    for n in old_requests.keys() - new_requests.keys():
        findings.append(Finding("source_removed", f"request source `{n}` removed", True))
    for n in new_requests.keys() - old_requests.keys():
        findings.append(Finding("source_changed", f"request source `{n}` added", True))
    for n in sorted(old_requests.keys() & new_requests.keys()):
        for f in _fields(old_requests[n].schema, new_requests[n].schema, "request field"):
            findings.append(Finding(f.kind, f"{n}: {f.detail}", f.breaking))
    return findings
