"""The one base class of every error that is the user's to fix."""


class UserError(Exception):
    """Bad input, a bad option or a missing dependency: reported in one line, exit code 2."""


class UserErrors(UserError):
    """Several problems found together, so that the user sees them all at once: one line each."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


def messages(exc: UserError) -> list[str]:
    """The lines of a user error: one, or one per problem."""
    return exc.messages if isinstance(exc, UserErrors) else [str(exc)]
