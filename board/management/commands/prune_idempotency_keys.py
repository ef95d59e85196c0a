"""Delete the Idempotency-Key records that have expired (older than OMOI_IDEMPOTENCY_TTL_HOURS)."""

from django.core.management.base import BaseCommand

from board.services import idempotency_prune

BATCH = 1000


class Command(BaseCommand):
    help = "Delete expired Idempotency-Key records, in batches. The API also prunes a batch now and then by itself."

    def handle(self, *args, **options):
        total = 0
        while True:
            deleted = idempotency_prune(batch=BATCH)
            total += deleted
            if deleted < BATCH:
                break
        self.stdout.write(f"Deleted {total} expired Idempotency-Key record{'s' if total != 1 else ''}.")
