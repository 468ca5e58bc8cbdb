"""Small presentation filters for the pages."""
import re

from django import template
from django.utils.html import escape
from django.utils.safestring import mark_safe

register = template.Library()


@register.filter
def code_spans(text: str) -> str:
    """Text with `commands` in backticks shown as code (everything escaped first)."""
    return mark_safe(re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text)))


@register.filter
def lockout_minutes(wait) -> int:
    return max(1, round(wait.total_seconds() / 60))


@register.filter
def lockout_until(wait):
    from django.utils import timezone

    return timezone.localtime() + wait
