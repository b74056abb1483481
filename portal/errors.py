class ApplicationError(Exception):
    """A broken business rule. Views turn it into a form error or a message."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
