from django.apps import AppConfig


class OnboardingConfig(AppConfig):
    name = "onboarding"

    def ready(self) -> None:
        from onboarding import criteria, provision_steps  # noqa: F401 - registers the run kinds
