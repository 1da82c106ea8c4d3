"""Runs the scenarios through the bulk services, chunk by chunk, and tallies what was written.

Every group of ten customer records draws from its own ``random.Random`` seeded
with ``(seed, scenario, group)``, so the data do not depend on the chunk size,
and a larger scale only adds records after the ones a smaller scale made.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.db import connection, connections
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
    """``workers`` > 1 loads customer chunks in forked processes (PostgreSQL only): chunks are
    independent, and one process leaves the database idle while Python builds and checks a batch.
    """

    def __init__(self, *, sizes: Sizes, seed: int = 42, chunk: int = 10_000, workers: int = 1, log=print):
        if chunk <= 0 or chunk % GROUP:
            raise ValueError(f"chunk must be a positive multiple of {GROUP}")
        if workers < 1 or (workers > 1 and connection.vendor != "postgresql"):
            raise ValueError("workers > 1 needs PostgreSQL (SQLite has one writer at a time)")
        self.sizes, self.seed, self.chunk, self.workers, self.log = sizes, seed, chunk, workers, log
        self.actor = None  # demo data are written by the system, not by a user
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
        return _rng(self.seed, scenario, group)

    def _customers(self, label: str, total: int, make_group: GroupMaker, world) -> None:
        jobs = [
            (self.seed, label, make_group, world, start, min(start + self.chunk, total))
            for start in range(0, total, self.chunk)
        ]
        done = 0
        for stop, subjects, relationships in self._map(jobs):
            self.tally.subjects.update(subjects)
            self.tally.relationships.update(relationships)
            done += stop
            self._say(f"{label}: {done:,}/{total:,} ({done / total:.0%})")

    def _map(self, jobs: list[tuple]) -> Iterable[tuple[int, Counter, Counter]]:
        if self.workers == 1 or len(jobs) == 1:
            yield from map(_load_chunk, jobs)
            return
        connections.close_all()  # each forked worker opens its own connection
        with multiprocessing.get_context("fork").Pool(self.workers, initializer=connections.close_all) as pool:
            yield from pool.imap_unordered(_load_chunk, jobs)

    def _subjects(self, items: list[dict]):
        result = subject_bulk_upsert(actor=self.actor, items=items, action="demo.subjects_loaded")
        self.tally.subjects.update(result.counts)
        return result

    def _relationships(self, items: list[dict]) -> None:
        self.tally.relationships.update(_upsert_relationships(items))

    def _say(self, message: str) -> None:
        subjects, rels = self.tally.subjects, self.tally.relationships
        self.log(
            f"[{time.monotonic() - self.started:7.1f}s] {message} — subjects +{subjects['created']:,} "
            f"~{subjects['updated']:,} ={subjects['unchanged']:,}; relationships +{rels['created']:,} "
            f"~{rels['updated']:,} ={rels['unchanged']:,}"
        )


def _rng(seed: int, scenario: str, group: int) -> random.Random:
    return random.Random(f"{seed}:{scenario}:{group}")


def _load_chunk(job: tuple) -> tuple[int, Counter, Counter]:
    """Customer records ``start`` to ``stop``: build them, upsert them, then their relationships.

    Returns the number of records and the status counts, so workers report to the parent.
    """
    seed, label, make_group, world, start, stop = job
    batch = Batch()
    for group in range(start // GROUP, (stop + GROUP - 1) // GROUP):
        make_group(_rng(seed, label, group), group, min(GROUP, stop - group * GROUP), world, batch)
    result = subject_bulk_upsert(actor=None, items=batch.subjects, action="demo.subjects_loaded")
    ids = [r.id for r in result.results]
    relationships = _upsert_relationships([item | {"from": ids[pos]} for pos, item in batch.relationships])
    return stop - start, Counter(result.counts), relationships


def _upsert_relationships(items: list[dict]) -> Counter:
    counts: Counter = Counter()
    for start in range(0, len(items), RELATIONSHIP_CHUNK):
        chunk = items[start : start + RELATIONSHIP_CHUNK]
        counts.update(relationship_bulk_upsert(actor=None, items=chunk, action="demo.relationships_loaded").counts)
    return counts


def stored_counts() -> tuple[dict[str, int], dict[str, int]]:
    """Subjects per subject type and relationships per relationship type, as stored."""
    subjects = Subject.objects.values_list("subject_type__code").annotate(n=Count("id")).order_by()
    rels = Relationship.objects.values_list("relationship_type__code").annotate(n=Count("id")).order_by()
    return dict(subjects), dict(rels)
