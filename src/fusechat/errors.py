"""The one exception type for bad input, so scripts can report it cleanly."""


class InputError(ValueError):
    """Bad input: a malformed record, mismatched datasets, a missing file, a bad flag value.

    The message names what is wrong and where (file, record id, row, argument).
    """


def run_cli(main, argv=None, prog: str | None = None) -> int:
    """Run a script's ``main``; bad input ends it with one line on stderr and exit status 2, no
    traceback. Returns the exit status (scripts: ``raise SystemExit(run_cli(main))``)."""
    import sys

    try:
        main(argv)
    except InputError as exc:
        print(f"{prog + ': ' if prog else ''}error: {exc}", file=sys.stderr)
        return 2
    return 0
