"""``manage.py reapply_identity_rules``: re-extract stored identifiers under the current rules, re-resolve."""

from django.core.management.base import BaseCommand

from audit.services import acting_as, system_actor
from identity.services.reapply import CHUNK, identity_rules_reapply


class Command(BaseCommand):
    help = "Re-derive every source record's identifiers from its raw fields under the current rules, then re-resolve."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--chunk", type=int, default=CHUNK, help="records read per step")
        parser.add_argument("--refresh-golden", action="store_true", help="rebuild every OneID's golden record too")

    def handle(self, *args, chunk: int, refresh_golden: bool, **options) -> None:
        actor = system_actor("identity.reapply_rules")
        with acting_as(actor):
            result = identity_rules_reapply(actor=actor, chunk=chunk, refresh_golden=refresh_golden)
        summary = result.summary()
        self.stdout.write(
            f"{summary['records']:,} records read, {summary['changed']:,} with new identifiers"
            f" (+{summary['added']:,} / -{summary['removed']:,}); {summary['problems']:,} stored values rejected"
        )
        for problem in result.problem_samples:
            self.stdout.write(f"  record {problem['record']} {problem['field']}: {problem['message']}")
        if summary["resolution"]:
            r = summary["resolution"]
            self.stdout.write(
                f"resolution: {r['moved']:,} records moved, {r['created']:,} OneIDs created,"
                f" {r['merges']:,} merges, {r['splits']:,} splits"
            )
