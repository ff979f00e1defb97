"""The one exception type for bad input, so scripts can report it cleanly."""


class InputError(ValueError):
    """Bad input: a malformed record, mismatched datasets, a missing file, a bad flag value.

    The message names what is wrong and where (file, record id, row, argument).
    """
