"""The one base class of every error that is the user's to fix."""


class UserError(Exception):
    """Bad input, a bad option or a missing dependency: reported in one line, exit code 2."""
