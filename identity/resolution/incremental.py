"""Incremental resolution: re-partition only the region that some records can reach.

Concurrency: before the region is partitioned, its linking values and OneIDs are
locked with ``pg_advisory_xact_lock`` (sorted, one statement per round). The
region is collected again after each round of locks — a concurrent transaction
may have committed records that widen it — until it needs no new lock. Two
records bridging the same OneIDs therefore resolve one after the other, and the
second sees the first's merge: one merge event, the right partition. A deadlock
between two rounds (two regions growing into each other) rolls the resolution
back to its savepoint and retries it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

from django.db import OperationalError, connection, transaction

from ..extract import Rules, link_key, load_rules
from .apply import Outcome, apply_partition
from .partition import partition
from .region import Region, collect_region, region_graph

RETRIES = 5


def wait_for_batch() -> None:
    """Serialize against :func:`identity.resolution.batch.resolve_all` (PostgreSQL).

    Batch holds ``SHARE ROW EXCLUSIVE`` on the records table for its whole run; ``ROW EXCLUSIVE``
    conflicts with it but not with itself, so incremental resolutions, splits and merges still run
    side by side (the advisory locks order them), and none of them reads the graph while a batch run
    is rewriting it (or makes the batch's snapshot stale). Taken first in the transaction, before
    anything is read; ingest already holds it from writing the records.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE identity_sourcerecord IN ROW EXCLUSIVE MODE")


def _lock_ids(region: Region) -> set[int]:
    return set(region.keys) | {link_key(0, "oneid", "", str(o)) for o in region.oneids}


def _locked_region(seeds: set[int], rules: Rules, changed_keys: Mapping[int, int | None]) -> Region:
    locked: set[int] = set()
    new: list[int] = []
    while True:  # the locks of one pass are taken in the same round trip as the next pass's first round
        region = collect_region(seeds, rules, changed_keys, lock=new)
        if connection.vendor != "postgresql":
            return region  # SQLite: one writer at a time
        locked.update(new)
        new = sorted(_lock_ids(region) - locked)
        if not new:
            return region


def resolve_records(
    *,
    record_ids: Iterable[int],
    actor=None,
    changed_keys: Mapping[int, int | None] | None = None,
    correlation_id: uuid.UUID | None = None,
    rules: Rules | None = None,
) -> Outcome:
    """Resolve ``record_ids`` (new or changed records) and everything they can reach."""
    seeds = set(record_ids)
    if not seeds:
        return Outcome()
    rules = rules or load_rules()
    correlation_id = correlation_id or uuid.uuid4()
    for attempt in range(RETRIES):
        try:
            with transaction.atomic():
                wait_for_batch()
                region = _locked_region(seeds, rules, changed_keys or {})
                graph, current = region_graph(region, rules, with_views=True)
                return apply_partition(
                    partition=partition(graph),
                    current=current,
                    oneids=region.oneids,
                    actor=actor,
                    correlation_id=correlation_id,
                    rules=rules,
                    changed_records=seeds,
                    views=region.views,
                )
        except OperationalError as exc:
            if "deadlock" not in str(exc) or attempt == RETRIES - 1:
                raise
    raise AssertionError("unreachable")
