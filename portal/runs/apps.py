from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class RunsConfig(AppConfig):
    name = "portal.runs"
    label = "runs"
    verbose_name = "Runs"

    def ready(self) -> None:
        # Every app's steps.py registers its steps and run kinds.
        autodiscover_modules("steps")
