"""The one exception type for bad input, so scripts can report it cleanly."""


class InputError(ValueError):
    """Bad input: a malformed record, mismatched datasets, a missing file, a bad flag value.

    The message names what is wrong and where (file, record id, row, argument).
    """


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def run_cli(main, argv=None, prog: str | None = None) -> int:
    """Run a script's ``main(argv)``: the one place that sets up logging (INFO, on stderr); bad
    input ends it with one line ``prog: error: ...`` on stderr and exit status 2, no traceback.
    Returns the exit status (scripts: ``raise SystemExit(run_cli(main, prog="name.py"))``)."""
    import logging
    import sys

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    try:
        main(argv)
    except InputError as exc:
        print(f"{prog + ': ' if prog else ''}error: {exc}", file=sys.stderr)
        return 2
    return 0
