from django.apps import AppConfig


class OnboardingConfig(AppConfig):
    name = "onboarding"

    def ready(self) -> None:
        from onboarding import criteria, provision_steps, volume  # noqa: F401 - registers run kinds
