from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from api.urls import urls as api_urls

from . import users_admin  # noqa: F401  registers the users' admin before admin.site.urls is built
from .gate import upload_gate

admin.site.site_header = "Continuous learning — administration"
admin.site.site_title = "Continuous learning"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api_urls()),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Asked by the web server's front only (scripts/nginx.conf.in), which hides it from outside.
    path("__cl/upload-gate", upload_gate, name="upload_gate"),
    path("", include("dashboards.urls")),
]
