"""Runs the scenarios through the bulk services, chunk by chunk, and tallies what was written.

Every group of ten customer records draws from its own ``random.Random`` seeded
with ``(seed, scenario, group)``, so the data do not depend on the chunk size,
and a larger scale only adds records after the ones a smaller scale made.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db.models import Count

from subjects.models import Relationship, Subject
from subjects.services import relationship_bulk_upsert, subject_bulk_upsert

from . import aesthetics, nutrition, retail
from .aesthetics import Batch
from .scopes import scope_items
from .sizes import GROUP, Sizes
from .types import ensure_types

GroupMaker = Callable[[random.Random, int, int, object, Batch], None]
RELATIONSHIP_CHUNK = 20_000


@dataclass
class Tally:
    subjects: Counter = field(default_factory=Counter)
    relationships: Counter = field(default_factory=Counter)
    types_written: int = 0

    @property
    def written(self) -> int:
        return sum(c["created"] + c["updated"] for c in (self.subjects, self.relationships)) + self.types_written


class DemoLoader:
    def __init__(self, *, sizes: Sizes, seed: int = 42, chunk: int = 10_000, actor=None, log=print):
        if chunk <= 0 or chunk % GROUP:
            raise ValueError(f"chunk must be a positive multiple of {GROUP}")
        self.sizes, self.seed, self.chunk, self.actor, self.log = sizes, seed, chunk, actor, log
        self.tally = Tally()
        self.started = time.monotonic()

    def run(self) -> Tally:
        self.tally.types_written = ensure_types(actor=self.actor)
        self._say(f"types: {self.tally.types_written} written")
        self._subjects(scope_items())
        fixed = (aesthetics, nutrition, retail)
        self._subjects([item for module in fixed for item in module.fixed_subjects(self._rng(module.__name__, -1))])
        self._relationships([item for module in fixed for item in module.fixed_relationships()])
        self._say("master data loaded")
        self._customers("members", self.sizes.members, aesthetics.member_group, aesthetics.World.load())
        self._customers("nutrition users", self.sizes.nutrition_users, nutrition.user_group, nutrition.World())
        self._customers("retail customers", self.sizes.retail_customers, retail.customer_group, retail.World())
        return self.tally

    def _rng(self, scenario: str, group: int) -> random.Random:
        return random.Random(f"{self.seed}:{scenario}:{group}")

    def _customers(self, label: str, total: int, make_group: GroupMaker, world) -> None:
        for start in range(0, total, self.chunk):
            stop = min(start + self.chunk, total)
            batch = Batch()
            for group in range(start // GROUP, (stop + GROUP - 1) // GROUP):
                count = min(GROUP, stop - group * GROUP)
                make_group(self._rng(label, group), group, count, world, batch)
            ids = [r.id for r in self._subjects(batch.subjects).results]
            self._relationships([item | {"from": ids[pos]} for pos, item in batch.relationships])
            self._say(f"{label}: {stop:,}/{total:,} ({stop / total:.0%})")

    def _subjects(self, items: list[dict]):
        result = subject_bulk_upsert(actor=self.actor, items=items, action="demo.subjects_loaded")
        self.tally.subjects.update(result.counts)
        return result

    def _relationships(self, items: list[dict]) -> None:
        for start in range(0, len(items), RELATIONSHIP_CHUNK):
            result = relationship_bulk_upsert(
                actor=self.actor, items=items[start : start + RELATIONSHIP_CHUNK], action="demo.relationships_loaded"
            )
            self.tally.relationships.update(result.counts)

    def _say(self, message: str) -> None:
        subjects, rels = self.tally.subjects, self.tally.relationships
        self.log(
            f"[{time.monotonic() - self.started:7.1f}s] {message} — subjects +{subjects['created']:,} "
            f"~{subjects['updated']:,} ={subjects['unchanged']:,}; relationships +{rels['created']:,} "
            f"~{rels['updated']:,} ={rels['unchanged']:,}"
        )


def stored_counts() -> tuple[dict[str, int], dict[str, int]]:
    """Subjects per subject type and relationships per relationship type, as stored."""
    subjects = Subject.objects.values_list("subject_type__code").annotate(n=Count("id")).order_by()
    rels = Relationship.objects.values_list("relationship_type__code").annotate(n=Count("id")).order_by()
    return dict(subjects), dict(rels)
