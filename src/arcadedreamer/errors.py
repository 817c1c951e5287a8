"""The one exception type a user sees: a one-line message and an exit code, never a traceback."""


class UserError(Exception):
    """Bad input the user can fix. The CLI prints `str(self)` and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
