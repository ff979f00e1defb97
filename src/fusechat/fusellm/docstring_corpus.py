"""A real plain-text corpus that every Python installation has: the standard library's docstrings.

    python -m fusechat.fusellm.docstring_corpus --out DIR [--train_documents N] [--heldout_documents N]

English technical prose (the PSF's documentation of its own modules), read at run time from the
running interpreter under the Python licence, never copied into this repository. Documents, in a
fixed order: for each module of :data:`MODULES` in turn, its docstring and then the docstrings of
its public classes and functions (those it defines itself, by name), each as ``name: text``,
grouped into documents of at most ``doc_chars`` characters at paragraph boundaries. Held out
(``validation``): every document of every ``heldout_every``-th module (modules 5, 10, ... with the
default 5), so that the held-out texts are about modules the training texts never describe. The
text depends on the Python version only; the saved set records it.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import sys

from ..errors import InputError, run_cli
from .common import TEXT

logger = logging.getLogger(__name__)

# Pure-Python modules with prose docstrings, present in every CPython 3.10+ build.
MODULES = (
    "argparse", "json", "csv", "collections", "functools", "pathlib", "logging", "subprocess", "shutil",
    "textwrap", "string", "datetime", "decimal", "fractions", "statistics", "random", "heapq", "bisect",
    "dataclasses", "enum", "typing", "inspect", "ast", "tokenize", "difflib", "unittest.case", "email.message",
    "http.client", "urllib.parse", "zipfile", "tarfile", "gzip", "configparser", "calendar", "pprint",
    "contextlib", "abc", "copy", "pickle", "queue", "threading", "sched", "optparse", "getopt", "gettext",
    "locale", "base64", "secrets", "uuid", "ipaddress", "smtplib", "ftplib", "socketserver", "html.parser",
    "codecs", "tempfile", "filecmp", "glob", "fnmatch", "shlex", "cmd", "doctest", "pdb", "timeit", "trace",
    "traceback", "warnings", "weakref", "numbers", "platform", "sysconfig", "zipimport", "wave", "mailbox",
    "imaplib", "poplib", "netrc", "plistlib", "quopri", "selectors", "asyncio.events", "concurrent.futures._base",
    "multiprocessing.pool", "xml.dom.minidom", "logging.handlers", "importlib.metadata", "pydoc", "runpy",
)


def module_paragraphs(name: str) -> list[str]:
    """The docstrings of one module, as paragraphs: the module's own, then ``name: text`` for each public
    class and function it defines, in alphabetical order."""
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise InputError(f"standard-library module {name!r} cannot be imported here ({exc})") from None
    texts = [inspect.getdoc(module) or ""]
    for member_name, member in sorted(vars(module).items()):
        if member_name.startswith("_") or not (inspect.isclass(member) or inspect.isfunction(member)):
            continue
        if getattr(member, "__module__", None) != module.__name__:
            continue  # imported from elsewhere: described there
        doc = inspect.getdoc(member)
        if doc:
            texts.append(f"{member_name}: {doc}")
    return [p.strip() for text in texts for p in text.split("\n\n") if p.strip()]


def group_paragraphs(paragraphs: list[str], doc_chars: int) -> list[str]:
    """Consecutive paragraphs joined by blank lines into documents of at most ``doc_chars`` characters
    (a longer paragraph is a document by itself)."""
    documents, current = [], ""
    for paragraph in paragraphs:
        if current and len(current) + 2 + len(paragraph) > doc_chars:
            documents.append(current)
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        documents.append(current)
    return documents


def docstring_documents(modules=MODULES, doc_chars: int = 2000, heldout_every: int = 5) -> dict[str, list[str]]:
    """{"train": [...], "validation": [...]}: the documents of every module, held out by module."""
    if heldout_every < 2:
        raise InputError(f"--heldout_every must be at least 2, got {heldout_every}")
    if doc_chars < 100:
        raise InputError(f"--doc_chars must be at least 100, got {doc_chars}")
    splits = {"train": [], "validation": []}
    for position, name in enumerate(modules, 1):
        split = "validation" if position % heldout_every == 0 else "train"
        splits[split].extend(group_paragraphs(module_paragraphs(name), doc_chars))
    return splits


def docstring_dataset_dict(train_documents: int | None = None, heldout_documents: int | None = None,
                           doc_chars: int = 2000, heldout_every: int = 5):
    """A DatasetDict train/validation with one ``text`` column: the first documents of each split."""
    from datasets import Dataset, DatasetDict

    documents = docstring_documents(MODULES, doc_chars, heldout_every)
    limits = {"train": train_documents, "validation": heldout_documents}
    for split, limit in limits.items():
        if limit is not None and limit > len(documents[split]):
            raise InputError(f"the docstring corpus has {len(documents[split])} {split} documents on Python "
                             f"{sys.version.split()[0]}, fewer than the {limit} asked for")
    return DatasetDict({split: Dataset.from_dict({TEXT: texts[:limits[split]]})
                        for split, texts in documents.items()})


def main(argv=None) -> None:
    from ..storage import save_dataset_atomic

    parser = argparse.ArgumentParser(prog="python -m fusechat.fusellm.docstring_corpus",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="where the DatasetDict (train, validation) is saved")
    parser.add_argument("--train_documents", type=int, default=None, help="keep the first N training documents")
    parser.add_argument("--heldout_documents", type=int, default=None, help="keep the first N held-out documents")
    parser.add_argument("--doc_chars", type=int, default=2000, help="longest document, in characters")
    parser.add_argument("--heldout_every", type=int, default=5, help="hold out every N-th module")
    args = parser.parse_args(argv)
    dataset_dict = docstring_dataset_dict(args.train_documents, args.heldout_documents, args.doc_chars,
                                          args.heldout_every)
    save_dataset_atomic(dataset_dict, args.out)
    print({split: len(d) for split, d in dataset_dict.items()}, f"(Python {sys.version.split()[0]}) ->", args.out)


def cli(argv: list[str] | None = None) -> int:
    """Entry point of python -m fusechat.fusellm.docstring_corpus (the drivers' helper)."""
    return run_cli(main, argv, prog="python -m fusechat.fusellm.docstring_corpus")


if __name__ == "__main__":
    raise SystemExit(cli())
