"""The one exception type that launch turns into a one-line message and a non-zero exit."""


class GenreError(ValueError):
    """Bad input or configuration: the message names the file or field and what was expected. A
    ValueError, as scikit-learn users of ``GenReRegressor`` expect for bad input."""


def one_line_error(message: str) -> GenreError:
    """A GenreError whose message is one line: launch prints it as one, so wrapped text must not break it."""
    return GenreError(" ".join(str(message).split()))
