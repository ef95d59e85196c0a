"""`{% load omoi_markdown %}{{ ticket.description|markdown }}`: Markdown rendered and sanitised."""

from django import template

from ..markdown import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text):
    return render_markdown(text or "")
