"""The one exception type raised for a user's mistake or a bad file."""


class InfoGANError(ValueError):
    """A problem with the user's input (spec, arguments, file) that a message explains."""
