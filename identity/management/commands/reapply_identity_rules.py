"""``manage.py reapply_identity_rules``: re-extract stored identifiers under the current rules, re-resolve."""

from django.core.management.base import BaseCommand

from audit.services import acting_as, system_actor
from identity.services.reapply import CHUNK, reapply_request, run_reapply


class Command(BaseCommand):
    help = "Re-derive every source record's identifiers from its raw fields under the current rules, then re-resolve."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--chunk", type=int, default=CHUNK, help="records read per step")
        parser.add_argument("--refresh-golden", action="store_true", help="rebuild every OneID's golden record too")

    def handle(self, *args, chunk: int, refresh_golden: bool, **options) -> None:
        actor = system_actor("identity.reapply_rules")
        run = reapply_request(actor=actor, refresh_golden=refresh_golden)
        with acting_as(actor):
            run = run_reapply(run.pk, actor=actor, chunk=chunk)
        if run.status == "skipped":
            self.stdout.write(f"run {run.pk}: skipped, run {run.covered_by_id} applied the current rules")
            return
        self.stdout.write(
            f"run {run.pk}: {run.records:,} records read, {run.changed:,} with new identifiers"
            f" (+{run.added:,} / -{run.removed:,}); {run.problems:,} stored values rejected"
        )
        for problem in run.problem_samples:
            self.stdout.write(f"  record {problem['record']} {problem['field']}: {problem['message']}")
        r = run.resolution
        if r:
            self.stdout.write(
                f"resolution: {r['moved']:,} records moved, {r['created']:,} OneIDs created,"
                f" {r['merges']:,} merges, {r['splits']:,} splits"
            )
