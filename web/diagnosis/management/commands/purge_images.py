"""Retention: delete stored pictures older than N days, keep the result rows (run it daily, e.g. cron)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from diagnosis.services import images_purge


class Command(BaseCommand):
    help = ("Delete the stored pictures (upload, model input, heatmap) of analyses older than N days; "
            "the results stay. N defaults to ECGDX_IMAGE_RETENTION_DAYS (0 = keep pictures).")

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None,
                            help="age in days (default: the ECGDX_IMAGE_RETENTION_DAYS setting)")
        parser.add_argument("--dry-run", action="store_true", help="only count what would be deleted")

    def handle(self, *args, days=None, dry_run=False, **options):
        days = settings.ECGDX_IMAGE_RETENTION_DAYS if days is None else days
        if days < 0:
            raise CommandError("--days must be 0 or more")
        if days == 0:
            self.stdout.write("retention is off (0 days): no pictures deleted")
            return
        count = images_purge(older_than_days=days, dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(f"{verb} the pictures of {count} analyses older than {days} days")
