from django.core.management.base import BaseCommand, CommandError

from clsite import schedules


class Command(BaseCommand):
    help = "Show or set the retraining schedule (a django-q2 schedule run by qcluster)."

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--show", action="store_true", help="print the schedule")
        group.add_argument("--daily", metavar="HH:MM", help="every day at this time")
        group.add_argument("--weekly", nargs=2, metavar=("DAY", "HH:MM"), help="every week, e.g. --weekly mon 02:00")
        group.add_argument("--cron", metavar="EXPR", help='a cron expression, e.g. "0 */6 * * *"')
        group.add_argument("--off", action="store_true", help="no scheduled retraining")

    def handle(self, *args, **options):
        try:
            if options["daily"]:
                schedules.change(user=None, cron=schedules.daily_cron(options["daily"]))
            elif options["weekly"]:
                schedules.change(user=None, cron=schedules.weekly_cron(*options["weekly"]))
            elif options["cron"]:
                schedules.change(user=None, cron=options["cron"])
            elif options["off"]:
                schedules.change(user=None, cron=None)
        except schedules.ScheduleError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(schedules.describe())
