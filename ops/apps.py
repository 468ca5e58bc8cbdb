from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations"

    def ready(self):
        from django_q.signals import post_spawn

        from . import startup

        # Connecting writes nothing: the repair runs when a worker process starts (see ops.startup).
        post_spawn.connect(startup.on_worker_spawn, dispatch_uid="ops-worker-spawn")
