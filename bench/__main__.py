"""``python -m bench [--only NAME ...] [--profile ci|full] [--runs N]``; ``--list`` shows the benchmarks."""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from .harness import PROFILES, Bench, setup_django

# name -> module; each module has add_arguments(parser) and run(bench, options).
BENCHMARKS = {
    "bulk_upsert": "bench.bulk_upsert",
    "tag_rules": "bench.tag_rules",
    "oneid": "bench.oneid",
    "propagation": "bench.propagation",
    "tag_usage": "bench.tag_usage",
    "governance": "bench.governance",
}
DESCRIPTIONS = {
    "bulk_upsert": "bulk upsert of 1M subjects + 3M relationships via the services vs COPY (ci: 100k + 300k)",
    "tag_rules": "rule tags over 1M members / 5M events vs hand-written SQL; 100-subject recompute p95; worker memory",
    "oneid": "OneID ingest of 1M source records, batch resolution vs COPY + scipy, incremental p95",
    "propagation": "roll-up / push-down propagation vs hand-written SQL; event -> downstream tags latency",
    "tag_usage": "tag values list per request with vs without tag usage recording (the overhead)",
    "governance": "a regional manager's subject list and detail via the API at 1M subjects vs one SQL statement",
}


def parser() -> argparse.ArgumentParser:
    # Benchmarks share some option names (--keep-data, --requests, --incremental-only) meaning the
    # same thing in each; "resolve" lets a run of several take one value for all of them.
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__, conflict_handler="resolve")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only these (repeatable)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="ci", help="ci: a tenth of full (default)")
    p.add_argument("--runs", type=int, default=3, help="runs per step; medians and minimums are reported")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    known, _ = p.parse_known_args(argv)
    if known.list:
        for name in BENCHMARKS:
            print(f"{name:15} {DESCRIPTIONS[name]}")
        return 0
    url = setup_django()
    # Import only the selected benchmarks: each adds its own options.
    selected = known.only or list(BENCHMARKS)
    modules = {name: importlib.import_module(BENCHMARKS[name]) for name in selected}
    for module in modules.values():
        module.add_arguments(p)
    options = p.parse_args(argv)
    profile = PROFILES[options.profile]
    for name in selected:
        print(f"== {name} (profile {profile.name}, {options.runs} runs, {url})", flush=True)
        bench = Bench(name, profile, options.runs)
        started = time.monotonic()
        modules[name].run(bench, options)
        print()
        print(bench.table())
        path = bench.write_json()
        print(f"\n{name}: {time.monotonic() - started:.0f}s; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
