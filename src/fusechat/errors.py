"""The one exception type for bad input, so scripts can report it cleanly."""


class InputError(ValueError):
    """Bad input: a malformed record, mismatched datasets, a missing file, a bad flag value.

    The message names what is wrong and where (file, record id, row, argument).
    """


def run_cli(main, argv=None) -> None:
    """Run a script's ``main``; bad input ends it with the message and exit status 2, no traceback."""
    import sys

    try:
        main(argv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
