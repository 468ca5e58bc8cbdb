"""The benchmarks' bare view: a trivial template rendered behind the site's whole middleware
(sessions, login required, CSRF, CSP, axes ...) and context processors, so that a page's figure
can be set beside what any page costs on this stack.

    install()                        appends it to clsite.urls.urlpatterns (this process only)
    gunicorn bench.bare:application  the site's WSGI application with it (bench/web.py)
"""
from django.http import HttpResponse
from django.template import engines

PATH = "bench/bare/"
_TEMPLATE = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>bare</title></head>"
             "<body><p>Hello {{ user.get_username }}.</p></body></html>")
_template = None


def bare(request):
    global _template
    if _template is None:
        _template = engines["django"].from_string(_TEMPLATE)
    return HttpResponse(_template.render({}, request))


def install() -> None:
    from django.urls import clear_url_caches, path

    from clsite import urls

    if not any(getattr(p, "name", None) == "bench_bare" for p in urls.urlpatterns):
        urls.urlpatterns.append(path(PATH, bare, name="bench_bare"))
        clear_url_caches()


def __getattr__(name):
    # `application` is made on first use, so that importing this module needs no settings.
    if name == "application":
        from clsite.wsgi import application

        install()
        globals()["application"] = application
        return application
    raise AttributeError(name)
