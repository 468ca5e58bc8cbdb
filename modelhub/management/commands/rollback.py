from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from ingestion.management.base import InitialisedCommand
from modelhub import services
from modelhub.models import Deployment, ModelVersion


class Command(InitialisedCommand):
    help = "Roll back to the previous model version, or to --version X.Y; --list shows the history."

    def create_parser(self, prog_name, subcommand, **kwargs):
        # Our --version names a model version; it replaces Django's --version (the Django release).
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("--list", action="store_true", help="show every version and the deployment history")
        parser.add_argument("--at", help='only report which version was live at this time ("2026-11-20 14:00"); changes nothing')
        parser.add_argument("--version", help="the version to make active, e.g. 1.2")
        parser.add_argument("--reason", default="",
                            help="why (kept in the deployment ledger); required to deploy a version the gates rejected")

    def handle(self, *args, **options):
        if options["list"] or options["at"]:
            # --at is a question: without --list it must still never roll anything back.
            if options["version"]:
                raise CommandError("--list and --at only show the history; leave out --version, or run the rollback separately")
            return self.list(options["at"])
        target = None
        if options["version"]:
            try:
                target = ModelVersion.named(options["version"])
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            except ModelVersion.DoesNotExist:
                raise CommandError(f"there is no version {options['version']}; `rollback --list` shows them") from None
        try:
            deployment = services.activate_version(version=target, user=None, reason=options["reason"])
        except services.DeploymentError as exc:
            raise CommandError(str(exc)) from None
        source = deployment.from_version.version if deployment.from_version_id else "none"
        done = "forced deployment" if deployment.kind == Deployment.Kind.FORCED else "rolled back"
        self.stdout.write(self.style.SUCCESS(f"{done}: v{source} -> v{deployment.to_version.version} is active"))

    def list(self, at: str | None) -> None:
        if at:
            when = parse_datetime(at)
            if when is None:
                raise CommandError(f"{at!r} is not a date and time like 2026-11-20 14:00")
            if timezone.is_naive(when):
                when = timezone.make_aware(when)
            version = services.version_live_at(when)
            self.stdout.write(f"live at {when:%Y-%m-%d %H:%M %Z}: " + (f"v{version.version}" if version else "no model"))
            return
        self.stdout.write(f"{'version':<9}{'status':<11}{'accuracy':>9}{'auc':>7}  {'trained':<17}{'deployed':<17}estimator")
        for v in ModelVersion.objects.order_by("-major", "-minor"):
            m = v.metrics
            self.stdout.write(
                f"v{v.version:<8}{v.status:<11}{m.get('accuracy', 0):>9.3f}{(m.get('auc') or 0):>7.3f}  "
                f"{timezone.localtime(v.trained_at):%Y-%m-%d %H:%M}  "
                f"{timezone.localtime(v.deployed_at).strftime('%Y-%m-%d %H:%M') if v.deployed_at else '-':<17}{v.estimator}"
            )
        self.stdout.write("\ndeployments (newest first):")
        for d in Deployment.objects.select_related("from_version", "to_version", "user")[:20]:
            source = f"v{d.from_version.version}" if d.from_version_id else "-"
            self.stdout.write(
                f"  {timezone.localtime(d.created_at):%Y-%m-%d %H:%M}  {d.kind:<9}{source:>6} -> v{d.to_version.version:<6}"
                f"{d.user.username if d.user_id else 'system':<12}{d.reason}"
            )
