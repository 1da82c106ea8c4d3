"""Demo tags for the reference scenarios: groups, definitions, rules as data, events and values.

``load_demo`` runs after ``loaddemo`` has loaded the subjects. It is deterministic
(every random choice is seeded by the subject's key) and idempotent: groups, tags
and rule versions are saved only when they differ from what is stored, events are
idempotent by (source, event_id), explicit values go through the guarded
``store.write_values``, and rule tags are recomputed (``recompute.recompute_all``)
only when something they read was written since they were last computed — so a
second run writes nothing. Rules use the rule language of ``tags.rules.parse``
(docs/TAGS.md). Demo events fall in the year before ``EVENTS_UNTIL``: windowed
tags ("purchases in the last 90 days") age as real time passes, as they would.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
from collections.abc import Iterator

from django.db import connection
from django.db.models import Max

from subjects.demo.types import HEALTH_CONCERNS, PROJECT_CATEGORIES, SKIN_TYPES, SPECIALTIES
from subjects.models import Relationship, Subject, SubjectType
from tags import events
from tags.models import Computation, Event, TagDefinition, TagGroup, TagStatus, ValueSource
from tags.services import definitions, recompute, store

EVENTS_UNTIL = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
EVENT_SOURCE = "demo_pos"
CHUNK = 5_000
CHANNELS = ("walk_in", "referral", "online", "wecom")


def _opts(*values: str) -> list[tuple[str, str]]:
    return [(v, v.replace("_", " ").capitalize()) for v in values]


def _years(op: str, n: int) -> dict:
    return {op: [{"years_since": {"var": "attributes.birth_date"}}, n]}


def _bands(expr: dict, bands: list[tuple[str, float, str]], default: str | None = None) -> dict:
    """Cases ``expr <op> limit → value``, in order."""
    doc: dict = {"cases": [{"when": {op: [expr, limit]}, "then": value} for op, limit, value in bands]}
    if default is not None:
        doc["default"] = default
    return doc


def _copy(var: str, values) -> dict:
    """An enum tag equal to an attribute (or aggregate) with the same codes."""
    expr = {"var": var} if isinstance(var, str) else var
    return {"cases": [{"when": {"==": [expr, v]}, "then": v} for v in values]}


PURCHASES_90D = {"event_agg": {"type": "purchase", "fn": "count", "days": 90}}
FIRST_CHANNEL = {"event_agg": {"type": "visit", "fn": "first", "property": "channel"}}
TOP_CATEGORY = {"event_agg": {"type": "purchase", "fn": "mode", "property": "category"}}

GROUPS = {
    "member": [("demographics", "Demographics"), ("consumption", "Consumption"), ("preferences", "Preferences")],
    "doctor": [("expertise", "Expertise"), ("performance", "Performance")],
    "clinic": [("operations", "Operations")],
    "project": [("attributes", "Attributes")],
    "nutrition_user": [("health", "Health")],
    "nutritionist": [("expertise", "Expertise"), ("performance", "Performance")],
    "content": [("topics", "Topics")],
    "retail_customer": [("loyalty", "Loyalty")],
    "store": [("profile", "Profile")],
    "shopping_guide": [("performance", "Performance")],
}

# (subject type, group, code, name, value type, options, rule or None, unit). Rule tags come after the tags they read.
TAGS: list[tuple] = [
    ("member", "demographics", "age_band", "Age band", "enum", _opts("under_25", "25_34", "35_44", "45_plus"),
     {"cases": [{"when": _years("<", 25), "then": "under_25"}, {"when": _years("<", 35), "then": "25_34"},
                {"when": _years("<", 45), "then": "35_44"}, {"when": _years(">=", 45), "then": "45_plus"}]}, ""),
    ("member", "demographics", "skin_type", "Skin type", "enum", _opts(*SKIN_TYPES),
     _copy("attributes.skin_type", SKIN_TYPES), ""),
    ("member", "consumption", "purchases_90d", "Purchases (90 days)", "number", None,
     {"formula": PURCHASES_90D}, "orders"),
    ("member", "consumption", "purchase_frequency", "Purchase frequency", "enum",
     _opts("frequent", "occasional", "dormant"),
     _bands(PURCHASES_90D, [(">=", 3, "frequent"), (">=", 1, "occasional")], "dormant"), ""),
    ("member", "consumption", "spend_365d", "Spend (365 days)", "number", None,
     {"formula": {"event_agg": {"type": "purchase", "fn": "sum", "property": "amount", "days": 365}}}, "CNY"),
    ("member", "consumption", "high_value", "High value", "boolean", None,
     {"cases": [{"when": {">=": [{"var": "tags.spend_365d"}, 30_000]}, "then": True}], "default": False}, ""),
    ("member", "preferences", "first_visit_type", "First-visit type", "enum", _opts(*CHANNELS),
     _copy(FIRST_CHANNEL, CHANNELS), ""),
    ("member", "preferences", "favourite_category", "Favourite category", "enum", _opts(*PROJECT_CATEGORIES),
     _copy(TOP_CATEGORY, PROJECT_CATEGORIES), ""),
    ("doctor", "expertise", "specialties", "Specialties", "multi_enum", _opts(*SPECIALTIES), None, ""),
    ("doctor", "performance", "conversion_rate", "Conversion rate", "number", None, None, "%"),
    ("doctor", "performance", "rating", "Rating", "number", None, None, "stars"),
    ("doctor", "performance", "patients", "Patients treated", "number", None,
     {"formula": {"related": {"relationship": "treated_by", "direction": "in", "quantifier": "count"}}}, ""),
    ("clinic", "operations", "monthly_visits", "Monthly visits", "number", None, None, "visits"),
    ("clinic", "operations", "retention_rate", "Retention rate", "number", None, None, "%"),
    ("clinic", "operations", "service_grade", "Service grade", "enum", [("A", "Grade A"), ("B", "Grade B"),
     ("C", "Grade C")], _bands({"var": "tags.retention_rate"}, [(">=", 60, "A"), (">=", 40, "B")], "C"), ""),
    ("clinic", "operations", "member_count", "Members who visited", "number", None,
     {"formula": {"related": {"relationship": "visited", "direction": "in", "quantifier": "count"}}}, ""),
    ("project", "attributes", "recovery_period", "Recovery period", "enum", _opts("none", "short", "medium", "long"),
     _bands({"var": "attributes.recovery_days"}, [("<=", 1, "none"), ("<=", 7, "short"), ("<=", 30, "medium")],
            "long"), ""),
    ("project", "attributes", "price_band", "Price band", "enum", _opts("entry", "mid", "premium"),
     _bands({"var": "attributes.price"}, [("<", 2000, "entry"), ("<", 10_000, "mid")], "premium"), ""),
    ("project", "attributes", "suitable_population", "Suitable population", "multi_enum", _opts(*SKIN_TYPES),
     None, ""),
    ("nutrition_user", "health", "health_concerns", "Health concerns", "multi_enum", _opts(*HEALTH_CONCERNS),
     None, ""),
    ("nutrition_user", "health", "activity_level", "Activity level", "enum", _opts("low", "moderate", "high"),
     _copy("attributes.activity", ("low", "moderate", "high")), ""),
    ("nutritionist", "expertise", "specialties", "Specialties", "multi_enum", _opts(*HEALTH_CONCERNS), None, ""),
    ("nutritionist", "performance", "conversion_rate", "Conversion rate", "number", None, None, "%"),
    ("content", "topics", "topics", "Topics", "multi_enum", _opts(*HEALTH_CONCERNS), None, ""),
    ("retail_customer", "loyalty", "loyalty_tier", "Loyalty tier", "enum", _opts("regular", "silver", "gold"),
     _copy("attributes.tier", ("regular", "silver", "gold")), ""),
    ("store", "profile", "store_format", "Store format", "enum", _opts("mall", "street", "outlet"),
     _copy("attributes.format", ("mall", "street", "outlet")), ""),
    ("shopping_guide", "performance", "guide_rating", "Guide rating", "number", None, None, "stars"),
]  # fmt: skip


def _seeded(*key: object) -> random.Random:
    return random.Random(":".join(str(k) for k in ("tags-demo", *key)))


# Assigned values: (subject type, tag code) → value of a subject (id, source, external_id, attributes).
def _listed(name: str, allowed):
    return lambda s: sorted(set(s[3].get(name) or ()) & set(allowed)) or None


ASSIGNED = {
    ("doctor", "specialties"): _listed("specialties", SPECIALTIES),
    ("doctor", "conversion_rate"): lambda s: _seeded(s[1], s[2], "cr").randrange(10, 70),
    ("doctor", "rating"): lambda s: _seeded(s[1], s[2], "rating").choice((3.5, 4, 4.5, 4.5, 5)),
    ("clinic", "monthly_visits"): lambda s: _seeded(s[1], s[2], "visits").randrange(150, 1200, 10),
    ("clinic", "retention_rate"): lambda s: _seeded(s[1], s[2], "retention").randrange(25, 85),
    ("project", "suitable_population"): _listed("suitable_skin_types", SKIN_TYPES),
    ("nutrition_user", "health_concerns"): _listed("health_concerns", HEALTH_CONCERNS),
    ("nutritionist", "specialties"): _listed("specialties", HEALTH_CONCERNS),
    ("nutritionist", "conversion_rate"): lambda s: _seeded(s[1], s[2], "cr").randrange(15, 60),
    ("content", "topics"): _listed("topics", HEALTH_CONCERNS),
    ("shopping_guide", "guide_rating"): lambda s: _seeded(s[1], s[2], "rating").choice((3, 3.5, 4, 4.5, 5)),
}


class _Run:
    def __init__(self, stdout) -> None:
        self.out = stdout
        self.written = 0
        self.types = dict(SubjectType.objects.filter(code__in=GROUPS).values_list("code", "id"))

    def say(self, message: str) -> None:
        if self.out is not None:
            self.out.write(message + "\n")

    # definitions -------------------------------------------------------------------------
    def groups(self) -> dict[tuple[str, str], TagGroup]:
        stored = {
            (g.subject_type_id, g.code): g for g in TagGroup.objects.filter(subject_type_id__in=self.types.values())
        }
        found = {}
        for type_code, groups in GROUPS.items():
            if type_code not in self.types:
                continue
            for position, (code, name) in enumerate(groups):
                data = {"subject_type_id": self.types[type_code], "code": code, "name": name, "position": position}
                current = stored.get((self.types[type_code], code))
                if current is None or (current.name, current.position) != (name, position):
                    data["subject_type"] = SubjectType.objects.get(pk=data.pop("subject_type_id"))
                    current = definitions.tag_group_save(actor=None, data=data, instance=current)
                    self.written += 1
                found[(type_code, code)] = current
        return found

    def tags(self, groups) -> list[tuple[TagDefinition, dict]]:
        stored = {
            (t.subject_type_id, t.code): t
            for t in TagDefinition.objects.filter(subject_type_id__in=self.types.values()).prefetch_related("options")
        }
        rule_tags = []
        for type_code, group, code, name, value_type, options, rule, unit in TAGS:
            if type_code not in self.types:
                continue
            computation = Computation.RULE if rule else Computation.ASSIGNED
            current = stored.get((self.types[type_code], code))
            data = {"group": groups[(type_code, group)], "code": code, "name": name, "value_type": value_type,
                    "unit": unit, "computation": computation}  # fmt: skip
            if current is None:
                data["status"] = TagStatus.DRAFT if rule else TagStatus.ACTIVE
            if current is None or _tag_differs(current, data, options):
                current = definitions.tag_save(actor=None, data=data, options=options, instance=current)
                self.written += 1
            if rule:
                rule_tags.append((current, rule))
        return rule_tags

    def rule(self, tag: TagDefinition, document: dict) -> None:
        tag.refresh_from_db()
        if tag.rule_id and tag.rule.document == document:
            return
        definitions.rule_save(actor=None, tag=tag, document=document)
        version = tag.rules.aggregate(v=Max("version"))["v"]
        definitions.activate_rule(actor=None, tag=tag, version=version, recompute=False)
        self.written += 1

    # data --------------------------------------------------------------------------------
    def subjects(self, type_code: str) -> Iterator[list[tuple]]:
        """The type's subjects ``(id, source, external_id, attributes)`` in id-ordered chunks."""
        if type_code not in self.types:
            return
        qs = Subject.objects.filter(subject_type_id=self.types[type_code]).order_by("id")
        last = 0
        while True:
            chunk = list(qs.filter(id__gt=last).values_list("id", "source", "external_id", "attributes")[:CHUNK])
            if not chunk:
                return
            yield chunk
            last = chunk[-1][0]

    def events(self) -> None:
        created = 0
        for chunk in self.subjects("member"):
            # A member's events are ingested in one all-or-nothing call: one stored means all are.
            stored = set(
                Event.objects.filter(source=EVENT_SOURCE, subject_id__in=[m[0] for m in chunk])
                .values_list("subject_id", flat=True)
                .distinct()
            )
            items = [item for member in chunk if member[0] not in stored for item in _member_events(member)]
            if items:
                results = events.ingest_events(actor=None, items=items)
                created += sum(1 for r in results if r.status == "created")
        self.written += created
        self.say(f"tags demo: {created:,} member events created")

    def assigned(self, tags: dict[tuple[str, str], TagDefinition]) -> None:
        changed = 0
        for (type_code, code), value_of in ASSIGNED.items():
            tag = tags.get((type_code, code))
            if tag is None:
                continue
            for chunk in self.subjects(type_code):
                result = store.write_values(
                    tag, [(s[0], value_of(s)) for s in chunk], source=ValueSource.IMPORTED, actor=None
                )
                changed += result.created + result.updated + result.removed
        self.written += changed
        self.say(f"tags demo: {changed:,} assigned values written")

    def compute(self, rule_tags: list[TagDefinition]) -> None:
        rows, analyzed = 0, False
        for tag in rule_tags:
            tag = TagDefinition.objects.select_related("rule").get(pk=tag.pk)
            if self.written or _stale(tag):
                if not analyzed:
                    _analyze()
                    analyzed = True
                rows += recompute.recompute_all(tag, cascade=False)
        self.say(f"tags demo: {len(rule_tags)} rule tags, {rows:,} values computed")


def _analyze() -> None:
    """Fresh planner statistics for what was just bulk-loaded (PostgreSQL).

    Right after a load autovacuum has not run yet; with empty statistics the planner
    takes every table for one row and joins the rule's aggregates by nested loops.
    """
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE subjects_subject, subjects_relationship, tags_event, tags_tagvalue")


def _tag_differs(tag: TagDefinition, data: dict, options) -> bool:
    if any(getattr(tag, name) != value for name, value in data.items()):
        return True
    stored = [(o.value, o.label) for o in tag.options.all()]
    return stored != list(options or [])


def _stale(tag: TagDefinition) -> bool:
    """Never computed, or subjects or relationships changed since (e.g. a larger ``loaddemo``)."""
    if tag.last_computed_at is None:
        return True
    since = tag.last_computed_at
    return (
        Subject.objects.filter(subject_type_id=tag.subject_type_id, updated_at__gt=since).exists()
        or Relationship.objects.filter(updated_at__gt=since).exists()
    )


def _member_events(member: tuple) -> list[dict]:
    """A member's purchases and visits in the year before EVENTS_UNTIL, seeded by the member's key."""
    subject_id, source, external_id, _ = member
    rng = _seeded(source, external_id, "events")
    key = f"{source}-{external_id}"
    items = []
    for k in range(rng.choice((0, 1, 1, 2, 3, 4, 6))):
        category = rng.choice(PROJECT_CATEGORIES)
        items.append(
            _event(
                subject_id,
                "purchase",
                key,
                f"p{k}",
                _when(rng),
                {"amount": rng.randrange(300, 20_000, 100), "category": category},
            )
        )
    for k in range(rng.randint(1, 4)):
        items.append(_event(subject_id, "visit", key, f"v{k}", _when(rng), {"channel": rng.choice(CHANNELS)}))
    return items


def _when(rng: random.Random) -> str:
    return (EVENTS_UNTIL - dt.timedelta(days=rng.randrange(365), minutes=rng.randrange(24 * 60))).isoformat()


def _event(subject_id: int, type_: str, key: str, suffix: str, when: str, properties: dict) -> dict:
    return {
        "subject": subject_id,
        "type": type_,
        "occurred_at": when,
        "properties": properties,
        "source": EVENT_SOURCE,
        "event_id": f"{key}-{suffix}",
    }


def load_demo(*, stdout=None) -> None:
    """Load (or bring up to date) the demo tags of the reference scenarios; a second run writes nothing."""
    run = _Run(stdout if stdout is not None else sys.stdout)
    groups = run.groups()
    rule_tags = run.tags(groups)
    run.events()  # before the rules: their first computation then reads every event at once
    by_code = {(t.subject_type.code, t.code): t for t in TagDefinition.objects.select_related("subject_type")}
    run.assigned(by_code)
    for tag, document in rule_tags:
        run.rule(tag, document)
    run.compute([tag for tag, _ in rule_tags])
