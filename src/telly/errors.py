"""The one exception type for user mistakes caught at the boundary."""


class UserError(ValueError):
    """A mistake in what the user asked for (a path, a file, an option value).

    The CLI prints its message as one line and exits with code 2; library callers get a normal
    exception they can catch.
    """
