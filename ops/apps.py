from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations"

    def ready(self):
        from django_q.signals import post_spawn

        from . import startup

        # A worker process that starts fails the runs its killed predecessor left running and
        # repairs the mirrors, so a restart puts things right at once.
        post_spawn.connect(startup.on_worker_spawn, dispatch_uid="ops-worker-spawn")
