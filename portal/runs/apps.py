from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class RunsConfig(AppConfig):
    name = "portal.runs"
    label = "runs"
    verbose_name = "Runs"

    def ready(self) -> None:
        # The one way run kinds are registered: each app's kinds.py declares its kinds
        # (and imports the steps they use).
        autodiscover_modules("kinds")
