from django.core.management.base import BaseCommand

from operations.reaper import reap


class Command(BaseCommand):
    help = "Fail operations past their deadline as timed out and move their projects out of transitional states."

    def handle(self, *args, **options):
        changed = reap()
        self.stdout.write(f"Reaped {changed} operation(s) or stuck project(s).")
