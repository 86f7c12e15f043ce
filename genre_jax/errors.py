"""The one exception type that launch turns into a one-line message and a non-zero exit."""


class GenreError(Exception):
    """Bad input or configuration: the message names the file or field and what was expected."""
