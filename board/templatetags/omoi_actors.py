"""`{% load omoi_actors %}{{ discovery.discovered_by|actor }}`: who did something, as people call them."""

from django import template

from ..activity import shown_actor

register = template.Library()


@register.filter(name="actor")
def actor_filter(label):
    return shown_actor(label)
