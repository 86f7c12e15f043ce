"""The one exception type that launch turns into a one-line message and a non-zero exit."""


class GenreError(ValueError):
    """Bad input or configuration: the message names the file or field and what was expected. A
    ValueError, as scikit-learn users of ``GenReRegressor`` expect for bad input."""
