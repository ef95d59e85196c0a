from django.apps import AppConfig


class DiscoveriesConfig(AppConfig):
    name = "discoveries"
    verbose_name = "Discoveries"
