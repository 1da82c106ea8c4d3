"""Reusable benchmark harness: Django set-up, profiles, timed steps, reports.

A benchmark records *samples* of named steps (one sample per run); the report
gives the median and minimum of each step, items/s, rows written and peak RSS,
and ratios ``ours / reference`` of medians measured in the same run, which are
what stays comparable between machines. Results are also written as JSON to
``bench/results/<name>-<timestamp>.json`` so runs can be compared.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import resource
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tagweave_bench"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_DIR = Path(__file__).resolve().parent.parent
# OneID tables without database foreign keys: ``TRUNCATE subjects_subject … CASCADE`` empties the records
# (their brand is a constraint) but not these, whose rows would then point at reused ids.
IDENTITY_UNCONSTRAINED = "identity_recordassignment, identity_identifier, identity_oneid"


@dataclass(frozen=True)
class Profile:
    """A scale: ``full`` is the size the targets are stated for, ``ci`` a tenth of it."""

    name: str
    scale: float

    def n(self, full_size: int, minimum: int = 1) -> int:
        return max(minimum, round(full_size * self.scale))


PROFILES = {"smoke": Profile("smoke", 0.001), "ci": Profile("ci", 0.1), "full": Profile("full", 1.0)}


# Django ----------------------------------------------------------------------------------


def database_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)


def bench_environ(url: str) -> dict[str, str]:
    """Environment for the bench process and the servers it starts.

    DEBUG is off because with DEBUG on Django keeps every statement (with its
    multi-megabyte JSON parameter) in ``connection.queries``, which production
    does not pay for.
    """
    return {
        "DATABASE_URL": url,
        "DEBUG": "0",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "tagweave-bench-only-secret-key-not-for-production",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
    }


def ensure_database(url: str) -> bool:
    """Create the database named by ``url`` if it is missing; True when created."""
    import psycopg
    from psycopg import sql

    params = psycopg.conninfo.conninfo_to_dict(url)
    name = params.get("dbname")
    admin = {**params, "dbname": "postgres"}
    with psycopg.connect(**admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return True


def setup_django(url: str | None = None, migrate: bool = True) -> str:
    """Point Django at the bench database (created and migrated if needed)."""
    url = url or database_url()
    os.environ.update(bench_environ(url))
    ensure_database(url)
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
    return url


def raw_connection():
    """The psycopg connection under Django's default connection."""
    from django.db import connection

    connection.ensure_connection()
    return connection.connection


# Measuring -------------------------------------------------------------------------------


class Stopwatch:
    """Accumulates the time spent inside ``with watch:`` blocks (generation stays outside)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds += time.perf_counter() - self._start


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark so the next reading is this step's peak (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Sample:
    seconds: float
    items: int
    rows_written: int | None = None
    peak_rss_mb: float | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Step:
    name: str
    description: str = ""
    samples: list[Sample] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def minimum(self) -> float:
        return min(s.seconds for s in self.samples)

    @property
    def items(self) -> int:
        return self.samples[-1].items

    @property
    def rows_written(self) -> int | None:
        values = [s.rows_written for s in self.samples if s.rows_written is not None]
        return max(values) if values else None

    @property
    def peak_rss_mb(self) -> float | None:
        values = [s.peak_rss_mb for s in self.samples if s.peak_rss_mb is not None]
        return max(values) if values else None

    def as_dict(self) -> dict:
        return {
            "description": self.description,
            "runs": len(self.samples),
            "median_s": self.median,
            "min_s": self.minimum,
            "items": self.items,
            "items_per_s": self.items / self.median if self.median else None,
            "rows_written": self.rows_written,
            "peak_rss_mb": self.peak_rss_mb,
            "samples": [s.__dict__ for s in self.samples],
        }


class Bench:
    """One benchmark's steps, ratios and notes for one invocation."""

    def __init__(self, name: str, profile: Profile, runs: int) -> None:
        self.name = name
        self.profile = profile
        self.runs = runs
        self.steps: dict[str, Step] = {}
        self.ratios: list[tuple[str, str, str]] = []  # (label, ours, reference)
        self.notes: list[str] = []
        self.params: dict = {}
        self.sections: dict[str, object] = {}
        self.started = dt.datetime.now(dt.UTC)
        self.environment = environment()  # at the start: the code that is measured

    def step(self, name: str, description: str = "") -> Step:
        step = self.steps.setdefault(name, Step(name, description))
        if description and not step.description:
            step.description = description
        return step

    @contextlib.contextmanager
    def sample(self, name: str, description: str = "") -> Iterator[Sample]:
        """Record one sample; the body fills ``seconds`` (via a Stopwatch), ``items``, ``rows_written``."""
        per_step = reset_peak_rss()
        sample = Sample(seconds=0.0, items=0)
        yield sample
        sample.peak_rss_mb = round(peak_rss_mb(), 1)
        sample.extra.setdefault("peak_rss_is_per_step", per_step)
        self.step(name, description).samples.append(sample)

    def add_sample(self, name: str, sample: Sample, description: str = "") -> None:
        self.step(name, description).samples.append(sample)

    def compare(self, label: str, ours: str, reference: str) -> None:
        self.ratios.append((label, ours, reference))

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def ratio_values(self) -> list[dict]:
        """Ratios of seconds per item (the same as of seconds when both steps wrote the same items)."""
        out = []
        for label, ours, ref in self.ratios:
            if ours in self.steps and ref in self.steps and self.steps[ref].median:
                out.append(
                    {
                        "label": label,
                        "ours": ours,
                        "reference": ref,
                        "ratio_median": _per_item(self.steps[ours], "median") / _per_item(self.steps[ref], "median"),
                        "ratio_min": _per_item(self.steps[ours], "minimum") / _per_item(self.steps[ref], "minimum"),
                    }
                )
        return out

    # Output ------------------------------------------------------------------------------

    def table(self) -> str:
        head = ("step", "runs", "median s", "min s", "items", "items/s", "rows written", "peak RSS MB")
        rows = [head]
        for step in self.steps.values():
            rate = step.items / step.median if step.median else 0
            rows.append(
                (
                    step.name,
                    str(len(step.samples)),
                    f"{step.median:.3f}",
                    f"{step.minimum:.3f}",
                    f"{step.items:,}",
                    f"{rate:,.0f}",
                    "-" if step.rows_written is None else f"{step.rows_written:,}",
                    "-" if step.peak_rss_mb is None else f"{step.peak_rss_mb:,.0f}",
                )
            )
        lines = _format_rows(rows)
        ratios = self.ratio_values()
        if ratios:
            lines.append("")
            lines += _format_rows(
                [("ratio (ours / reference)", "median", "min", "ours step", "reference step")]
                + [
                    (r["label"], f"{r['ratio_median']:.2f}×", f"{r['ratio_min']:.2f}×", r["ours"], r["reference"])
                    for r in ratios
                ]
            )
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "benchmark": self.name,
            "profile": self.profile.name,
            "scale": self.profile.scale,
            "runs": self.runs,
            "started": self.started.isoformat(),
            "finished": dt.datetime.now(dt.UTC).isoformat(),
            "environment": self.environment,
            "params": self.params,
            "steps": {name: step.as_dict() for name, step in self.steps.items()},
            "ratios": self.ratio_values(),
            "notes": self.notes,
            **self.sections,
        }

    def write_json(self, directory: Path = RESULTS_DIR) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        path = directory / f"{self.name}-{self.profile.name}-{stamp}.json"
        path.write_bytes(orjson.dumps(self.as_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
        return path


def _per_item(step: Step, stat: str) -> float:
    """Seconds per item, so steps over different item counts (HTTP vs service) compare."""
    return getattr(step, stat) / max(step.items, 1)


def _format_rows(rows: list[tuple]) -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        cells = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(cells))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def environment() -> dict:
    info = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
    }
    with contextlib.suppress(Exception):
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, check=True
        ).stdout.strip()
        info["git_modified"] = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")[:-1]
    with contextlib.suppress(Exception):
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            info["postgresql"] = cursor.fetchone()[0]
    return info


def table_write_counts(tables: list[str]) -> int:
    """Rows inserted + updated + deleted in ``tables`` so far, from PostgreSQL's statistics.

    An independent check of "rows written" (it does not trust the service's counts):
    take it before and after a step. This backend's pending counters are flushed first.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
    with connection.cursor() as cursor:  # a new statement ends the flushing transaction
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables"
            " WHERE relname = ANY(%s)",
            [tables],
        )
        return int(cursor.fetchone()[0])
