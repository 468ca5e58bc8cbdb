from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit log"

    def ready(self):
        from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed

        from . import signals

        user_logged_in.connect(signals.logged_in, dispatch_uid="audit-login")
        user_logged_out.connect(signals.logged_out, dispatch_uid="audit-logout")
        user_login_failed.connect(signals.login_failed, dispatch_uid="audit-login-failed")
