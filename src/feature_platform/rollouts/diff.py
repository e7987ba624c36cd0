"""A rollout's plan: Feast's registry diff, turned into changes a reviewer can act on.

`feast plan` prints a diff for people and always exits 0. This module reads the same
structured diff (`feast.diff.registry_diff.RegistryDiff`: each object with its current and
desired definition) and classifies every change:

- safe: a new entity, view, feature or service; a description, tag, owner or logging change; a
  longer ttl; a shorter ttl on a view no service uses;
- breaking: deleting or renaming an entity, view, feature or service; changing a feature's
  type; changing an entity's join key; shrinking the ttl of a view a service depends on.

Permissions are classified by the access they grant: one that takes access away is
breaking. With no permission at all Feast lets every authenticated caller in, so the first
permissions are breaking; so are deleting one (the last one too: everyone gets in), and
narrowing the actions, types, name patterns, required tags or roles of one. Widening one,
adding one next to others, a permission renamed without other change, and its tags are safe.

Anything else is treated as breaking too, named as "not on the safe list": a change the
platform cannot show to be harmless is held for a person to allow. Adding is always fine;
removing or renaming needs a new version (a new view or service name) next to the old one
(`versions`): a breaking update of a view or service carries that offer, with the names.
Deleting an old version whose successor exists is a retirement, safe once no feature
server has read it for the quiet period (`versions.Readers`), breaking until then.

The plan itself (`Plan`: its changes, counts, JSON and markdown) lives here too; finding the
diff of an environment is `rollout_plan`'s job.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from feature_platform.errors import EXIT_BREAKING, EXIT_OK
from feature_platform.rollouts import versions

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
PERMISSION = "permission"
# Deleting one of these breaks whoever reads it.
CONSUMED_TYPES = {"entity", "feature service", *VIEW_TYPES}
SERVICE = "feature service"
# What ships as a version beside the old one instead of changing in place.
VERSIONED_TYPES = {SERVICE, *VIEW_TYPES}


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
    # For a breaking update of a view or service: the versioned way to ship it
    # ({"keep": old, "add": new, "services": {old service: new service}}).
    instead: dict[str, Any] | None = None

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
    offers = [c for c in sorted(plan.changes, key=_change_order) if c.instead]
    if offers:
        lines += ["", "**Ship it as a version instead** (refused in place, applied beside it):", ""]
        lines += [f"- {_offer_text(c)}" for c in offers]
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


def _offer_text(change: Change) -> str:
    offer = change.instead or {}
    keep, add, services = offer["keep"], offer["add"], offer["services"]
    text = f"keep {change.object_type} `{keep}` as it is; add `{add}` with the change"
    beside = {**offer.get("on_demand", {}), **services}
    moved = [f"`{new}` beside `{old}`" for old, new in sorted(beside.items()) if old != keep]
    if moved:
        text += f"; add {', '.join(moved)}, reading `{add}`"
    if change.object_type in VIEW_TYPES:
        text += f"; apply backfills `{add}` before it registers the new service(s)"
    clients = ", ".join(f"`{new}`" for new in sorted(services.values())) or f"`{add}`"
    old = ", ".join(f"`{o}`" for o in sorted({keep, *beside}))
    return (
        f"{text}; move clients to {clients}; retire {old} once unread for the quiet period "
        "(`feature-platform rollout-readers ENV`)"
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- classification ---------------------------------------------------------------------


def classify(registry_diff: Any, readers: versions.Readers | None = None) -> list[Change]:
    """Classify each created, updated or deleted object of a Feast RegistryDiff;
    `readers` (when each service was last read) decides whether deleting an old version
    is a retirement."""
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
    current = [
        d.current_feast_object
        for d in registry_diff.feast_object_diffs
        if d.current_feast_object is not None
    ]
    desired_names = {
        (d.feast_object_type.value, d.name)
        for d in registry_diff.feast_object_diffs
        if d.new_feast_object is not None
    }
    taken = {d.name for d in registry_diff.feast_object_diffs}
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
            later = versions.successor_in(d.name, {n for t, n in desired_names if t == object_type})
            findings = (
                _retirement(object_type, d.name, later, current, readers)
                if later is not None and object_type in VERSIONED_TYPES
                else _deletion(object_type)
            )
            changes.append(Change(DELETE, object_type, d.name, findings))
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
                change = Change(UPDATE, object_type, d.name, findings)
                if change.classification == BREAKING and object_type in VERSIONED_TYPES:
                    change.instead = _version_offer(
                        object_type, d.name, dependents, on_demand_dependencies(desired), taken
                    )
                changes.append(change)
    _one_offer_per_path(changes)
    _mark_renames(changes, {(d.feast_object_type.value, d.name): d for d in diffs})
    _permission_changes(changes, registry_diff.feast_object_diffs)
    return changes


def _version_offer(
    object_type: str,
    name: str,
    dependents: dict[str, set[str]],
    on_demand: dict[str, set[str]],
    taken: set[str],
) -> dict[str, Any]:
    """The names of the versioned path: a new view (or service) beside the old, a new
    version of every on-demand view computed from the view and of every service that
    reads it, directly or through those."""
    readers = sorted(dependents.get(name, set())) if object_type in VIEW_TYPES else [name]
    add = versions.next_free(name, taken)
    services = {s: add if s == name else versions.next_free(s, taken) for s in readers}
    computed = sorted(on_demand.get(name, set())) if object_type in VIEW_TYPES else []
    offer = {"keep": name, "add": add, "services": services}
    if computed:
        offer["on_demand"] = {v: versions.next_free(v, taken) for v in computed}
    return offer


def _one_offer_per_path(changes: list[Change]) -> None:
    """A service or on-demand view that breaks because a view it reads does is named in
    that view's offer: no offer of its own."""
    covered = {
        name
        for c in changes
        if c.instead is not None
        for name in (*c.instead["services"], *c.instead.get("on_demand", {}))
        if name != c.name
    }
    for change in changes:
        if change.name in covered:
            change.instead = None


def _retirement(
    object_type: str,
    name: str,
    later: str,
    current: Sequence[Any],
    readers: versions.Readers | None,
) -> list[Finding]:
    """Deleting an old version whose successor exists: safe once unread for the quiet
    period. A view counts as read when a service reading it in the registry is."""
    head = f"old version, `{later}` succeeds it"
    if readers is None or readers.unknown is not None:
        why = readers.unknown if readers is not None else "not read"
        return [Finding("retire_unknown", f"{head}; last read unknown ({why})", True)]
    services = [name] if object_type == SERVICE else service_dependencies(current).get(name, [])
    last = readers.last_read(services, None if object_type == SERVICE else name)
    quiet = f"quiet period {versions.ago(readers.quiet.total_seconds())}"
    if readers.quiet_since(last):
        when = "never read" if last is None else f"last read {versions.ago(readers.now - last)} ago"
        return [Finding("retire", f"retire: {head}; {when} ({quiet})", False)]
    if last is None:
        return [Finding("retire_unknown", f"{head}; {readers.too_young()}", True)]
    return [
        Finding(
            "still_read",
            f"{head}, but read {versions.ago(readers.now - last)} ago ({quiet}): "
            "move its readers first",
            True,
        )
    ]


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


def on_demand_dependencies(objects: Iterable[Any]) -> dict[str, set[str]]:
    """View name -> the on-demand views computed from it."""
    from feast.on_demand_feature_view import OnDemandFeatureView

    computed: dict[str, set[str]] = {}
    for odfv in (o for o in objects if isinstance(o, OnDemandFeatureView)):
        for view in odfv.source_feature_view_projections:
            computed.setdefault(view, set()).add(odfv.name)
    return computed


def service_dependencies(objects: Iterable[Any]) -> dict[str, set[str]]:
    """View name -> the feature services that read it, directly or through an
    on-demand view computed from it."""
    from feast.feature_service import FeatureService

    objects = list(objects)
    direct: dict[str, set[str]] = {}
    for service in (o for o in objects if isinstance(o, FeatureService)):
        for projection in service.feature_view_projections:
            direct.setdefault(projection.name, set()).add(service.name)
    uses = {view: set(services) for view, services in direct.items()}
    for view, computed in on_demand_dependencies(objects).items():
        for odfv in computed:
            uses.setdefault(view, set()).update(direct.get(odfv, set()))
    return {view: services for view, services in uses.items() if services}


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
        elif object_type == PERMISSION:
            findings.append(_permission_property(prop, current, new))
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


# --- permissions ------------------------------------------------------------------------


def _permission_changes(changes: list[Change], all_diffs: Iterable[Any]) -> None:
    """Created and deleted permissions, judged against the permissions around them."""
    all_diffs = list(all_diffs)
    before = [
        d.current_feast_object
        for d in all_diffs
        if d.feast_object_type.value == PERMISSION and d.current_feast_object is not None
    ]
    after = [
        d.new_feast_object
        for d in all_diffs
        if d.feast_object_type.value == PERMISSION and d.new_feast_object is not None
    ]
    objects = {
        (d.transition_type.name.lower(), d.name): d.current_feast_object or d.new_feast_object
        for d in all_diffs
        if d.feast_object_type.value == PERMISSION
    }
    created = [c for c in changes if c.object_type == PERMISSION and c.action == CREATE]
    deleted = [c for c in changes if c.object_type == PERMISSION and c.action == DELETE]
    # A registry holding nothing yet serves nobody: its first permissions take nothing away.
    serving = any(d.current_feast_object is not None for d in all_diffs)
    if not before and serving:
        for change in created:
            change.findings = [
                Finding(
                    "first_permission",
                    "first permission: until now every authenticated caller may do "
                    "anything; from now on only what a permission grants",
                    True,
                )
            ]
        return
    renamed: set[str] = set()
    for gone in deleted:
        old = objects[(DELETE, gone.name)]
        twin = next(
            (
                c
                for c in created
                if c.name not in renamed and _same_but_name(old, objects[(CREATE, c.name)])
            ),
            None,
        )
        if twin is not None:
            renamed.add(twin.name)
            gone.findings = [
                Finding("permission_renamed", f"renamed to `{twin.name}`: same access", False)
            ]
            twin.findings = [
                Finding("permission_renamed", f"renamed from `{gone.name}`: same access", False)
            ]
        elif not after:
            gone.findings = [
                Finding(
                    "last_permission_deleted",
                    "last permission deleted: every authenticated caller may do anything",
                    True,
                )
            ]
        else:
            gone.findings = [
                Finding(
                    "permission_deleted",
                    f"permission deleted: {_grant(old)} no longer granted by it",
                    True,
                )
            ]
    for change in created:
        if change.name not in renamed:
            new = objects[(CREATE, change.name)]
            change.findings = [
                Finding("permission_added", f"new permission: grants {_grant(new)}", False)
            ]


def _grant(permission: Any) -> str:
    actions = ", ".join(sorted(a.value for a in permission.actions))
    return f"{actions} to {_policy_text(permission.policy)}"


def _policy_text(policy: Any) -> str:
    members = _policy_members(policy)
    if members is None:
        return "everyone"
    return "; ".join(f"{k} {', '.join(sorted(v))}" for k, v in sorted(members.items()))


def _policy_members(policy: Any) -> dict[str, set[str]] | None:
    """Who a policy admits, by kind of identity (any one suffices); None: everyone."""
    from feast.permissions.policy import (
        CombinedGroupNamespacePolicy,
        GroupBasedPolicy,
        NamespaceBasedPolicy,
        RoleBasedPolicy,
    )

    if isinstance(policy, RoleBasedPolicy):
        return {"roles": set(policy.roles)}
    if isinstance(policy, CombinedGroupNamespacePolicy):
        return {"groups": set(policy.groups), "namespaces": set(policy.namespaces)}
    if isinstance(policy, GroupBasedPolicy):
        return {"groups": set(policy.groups)}
    if isinstance(policy, NamespaceBasedPolicy):
        return {"namespaces": set(policy.namespaces)}
    return None


def _covered_types(types: Iterable[Any]) -> set[Any]:
    """The managed types a permission's types match: each one and its subclasses."""
    from feast.feast_object import ALL_RESOURCE_TYPES

    types = list(types)
    return {t for t in ALL_RESOURCE_TYPES if any(issubclass(t, s) for s in types)}


def _narrowed(what: str, lost: Iterable[str], gained: Iterable[str]) -> Finding:
    lost, gained = sorted(lost), sorted(gained)
    if lost:
        return Finding("permission_narrowed", f"{what} no longer granted: {', '.join(lost)}", True)
    if gained:
        return Finding("permission_widened", f"{what} added: {', '.join(gained)}", False)
    return Finding("permission_reordered", f"{what} reordered: same access", False)


def _permission_property(prop: str, current: Any, new: Any) -> Finding:
    if prop == "actions":
        old_a, new_a = {a.value for a in current.actions}, {a.value for a in new.actions}
        return _narrowed("actions", old_a - new_a, new_a - old_a)
    if prop == "types":
        old_t, new_t = _covered_types(current.types), _covered_types(new.types)
        return _narrowed(
            "types", {t.__name__ for t in old_t - new_t}, {t.__name__ for t in new_t - old_t}
        )
    if prop == "policy":
        old_m, new_m = _policy_members(current.policy), _policy_members(new.policy)
        if new_m is None:
            return Finding("permission_widened", "now granted to everyone", False)
        if old_m is None:
            return Finding(
                "permission_narrowed",
                f"no longer granted to everyone, only {_policy_text(new.policy)}",
                True,
            )
        lost = {f"{k} {m}" for k, v in old_m.items() for m in v - new_m.get(k, set())}
        gained = {f"{k} {m}" for k, v in new_m.items() for m in v - old_m.get(k, set())}
        return _narrowed("callers", lost, gained)
    if prop == "name_patterns":
        old_p, new_p = set(current.name_patterns), set(new.name_patterns)
        # No pattern matches every name; otherwise any one pattern matching suffices.
        if not new_p or (old_p and old_p <= new_p):
            return _narrowed("name patterns", [], new_p - old_p if old_p else ["every name"])
        return Finding(
            "permission_narrowed",
            f"name patterns {sorted(old_p) or 'every name'} -> {sorted(new_p)}: "
            "names they matched may no longer match",
            True,
        )
    if prop == "required_tags":
        old_r = set((current.required_tags or {}).items())
        new_r = set((new.required_tags or {}).items())
        # Every required tag must match: fewer requirements match more resources.
        if new_r <= old_r:
            return _narrowed("required tags", [], [f"{k} dropped" for k, _ in old_r - new_r])
        return Finding(
            "permission_narrowed",
            f"required tags now {dict(sorted(new_r))}: resources without them lose access",
            True,
        )
    return _unlisted(prop)
