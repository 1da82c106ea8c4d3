"""``manage.py loaddemo``: the reference scenarios as demo data, deterministic and idempotent."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from subjects.demo.loader import DemoLoader, stored_counts
from subjects.demo.sizes import Sizes


class Command(BaseCommand):
    help = (
        "Load the reference scenarios (medical aesthetics, nutrition, retail) through the bulk services. "
        "Deterministic for a seed; running it again writes nothing. See subjects/demo/sizes.py for the counts."
    )

    def add_arguments(self, parser):
        parser.add_argument("--scale", type=int, default=1, help="Multiply customers and their relationships.")
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--members", type=int, default=2000, help="Members at scale 1 (a multiple of 10).")
        parser.add_argument("--chunk", type=int, default=10_000, help="Customer records per bulk call.")
        parser.add_argument(
            "--workers", type=int, default=1, help="Processes loading customer chunks in parallel (PostgreSQL only)."
        )
        parser.add_argument(
            "--subjects-only",
            action="store_true",
            help="Load subjects and relationships only: no OneID identities, no tags and events (benchmark sizes).",
        )

    def handle(self, *args, scale, seed, members, chunk, workers, subjects_only, **options):
        try:
            sizes = Sizes.of(members=members, scale=scale)
            loader = DemoLoader(sizes=sizes, seed=seed, chunk=chunk, workers=workers, log=self.stdout.write)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        tally = loader.run()
        subjects, relationships = stored_counts()
        self.stdout.write("Subjects by type:")
        for code, n in sorted(subjects.items()):
            self.stdout.write(f"  {code:<22}{n:>12,}")
        self.stdout.write("Relationships by type:")
        for code, n in sorted(relationships.items()):
            self.stdout.write(f"  {code:<22}{n:>12,}")
        self.stdout.write(f"Total: {sum(subjects.values()):,} subjects, {sum(relationships.values()):,} relationships")
        if tally.written:
            self.stdout.write(self.style.SUCCESS(f"Done: {tally.written:,} rows written."))
        else:
            self.stdout.write(self.style.SUCCESS("Done: everything was already up to date; nothing written."))
        if subjects_only:
            return None
        # The layers on top of the subjects, each idempotent and reporting what it wrote:
        # OneID identities of the members, then tag groups, events and computed tags.
        from identity.demo import load_demo as load_identities
        from tags.demo import load_demo as load_tags

        self.stdout.write("Identities (OneID):")
        load_identities(stdout=self.stdout)
        self.stdout.write("Tags and events:")
        load_tags(stdout=self.stdout)
        return None
