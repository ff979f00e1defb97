"""Atomic outputs: every stage writes into a temporary sibling and renames it into place.

An interrupted run therefore never leaves a half-written folder or file at the final path
that a later stage would load. The siblings are hidden (``.{name}.tmp-{pid}-...``,
``.{name}.old-{pid}``, ``.{name}.scratch-{pid}-...``); those of a run that was killed outright
(SIGKILL, power loss) are removed by the next run writing the same output.

The rule every entry point applies to every file and folder it writes (:func:`check_output`,
before any work): an output may not be, contain or lie inside an input of the run or a model
folder, and may replace only what this project wrote. Every folder written here carries a marker
file (:data:`OUTPUT_MARKER`), every file a hidden marker beside it (``.{name}.fusechat-output``,
which also holds the file's provenance record); an empty folder counts as free. Outputs get the
user's umask, like any other tool's, whatever mode the library writing them chose.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .errors import InputError

logger = logging.getLogger(__name__)

OUTPUT_MARKER = ".fusechat-output"
SIBLING_KINDS = ("tmp", "old", "scratch")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _apply_umask(path: Path, full_mode: int) -> None:
    """tempfile creates folders 0700 and files 0600; give them the mode a plain mkdir/open would."""
    os.chmod(path, full_mode & ~_umask())


def _sibling_prefix(final: Path, kind: str) -> str:
    return f".{final.name}.{kind}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_siblings(final_path: str | os.PathLike) -> list[Path]:
    """Hidden temporary siblings of ``final_path`` whose writing process no longer runs."""
    final = Path(final_path)
    if not final.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.({'|'.join(SIBLING_KINDS)})-(\d+)?")
    stale = []
    for path in final.parent.iterdir():
        found = pattern.match(path.name)
        if not found:
            continue
        pid = int(found.group(2)) if found.group(2) else None  # no pid: left by an older version
        if pid is None or (pid != os.getpid() and not _pid_alive(pid)):
            stale.append(path)
    return stale


def clean_stale_siblings(final_path: str | os.PathLike) -> None:
    """Remove what a killed run writing ``final_path`` left behind."""
    for path in stale_siblings(final_path):
        logger.info("removing %s, left by an interrupted run", path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def file_marker(path: str | os.PathLike) -> Path:
    """The hidden marker beside a file written here."""
    p = Path(path)
    return p.with_name(f".{p.name}{OUTPUT_MARKER}")


def is_our_output(path: str | os.PathLike) -> bool:
    """A folder holding our marker, or a file with our marker beside it."""
    p = Path(path)
    return (p / OUTPUT_MARKER).is_file() if p.is_dir() else file_marker(p).is_file()


def mark_output(folder: str | os.PathLike) -> None:
    """Mark a finished folder as written here, so a later run may replace it."""
    marker = Path(folder) / OUTPUT_MARKER
    marker.write_text(json.dumps({"written_by": "fusechat"}) + "\n", encoding="utf-8")
    _apply_umask(marker, 0o666)


def mark_file(path: str | os.PathLike, record: dict | None = None) -> None:
    """Mark a file as written here (before it is moved into place); ``record``: its provenance."""
    marker = file_marker(path)
    marker.write_text(json.dumps({"written_by": "fusechat", "record": record}, ensure_ascii=False) + "\n",
                      encoding="utf-8")
    _apply_umask(marker, 0o666)


def file_record(path: str | os.PathLike) -> dict | None:
    """The provenance record kept in a file's marker; None when there is none."""
    marker = file_marker(path)
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("record")
    except (ValueError, AttributeError) as exc:
        raise InputError(f"{marker}: malformed output marker ({exc})") from None


MODEL_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
               "pytorch_model.bin.index.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def is_model_folder(path: Path) -> bool:
    """A folder holding a model (its config with weights or a tokenizer)."""
    return (path / "config.json").is_file() and any((path / name).exists() for name in MODEL_FILES)


def _inside(path: Path, folder: Path) -> bool:
    return folder in path.parents


def check_output(path: str | os.PathLike, flag: str, inputs: Iterable[str | os.PathLike | None] = (),
                 kind: str = "folder") -> Path:
    """The one rule for outputs, checked before any work (``kind``: "folder" or "file").

    Refused: an output that is, contains or lies inside one of ``inputs``; one inside a model folder;
    an existing file or non-empty folder that this project did not write (the user's files would be
    lost); one of the wrong kind; one whose parent cannot be created or written.
    """
    out = Path(path).expanduser()
    resolved = out.resolve()
    for item in inputs:
        if not item:
            continue
        source = Path(item).expanduser().resolve()
        if source == resolved or _inside(source, resolved):
            raise InputError(f"{flag} {out} is also an input ({item}); writing it would replace that input: "
                             "choose another output path")
        if _inside(resolved, source):
            raise InputError(f"{flag} {out} lies inside an input ({item}); writing it would change that input: "
                             "choose another output path")
    for parent in resolved.parents:
        if is_model_folder(parent):
            raise InputError(f"{flag} {out} lies inside the model folder {parent}; writing it would change that "
                             "model: choose another output path")
    if kind == "folder":
        if out.exists() and not out.is_dir():
            raise InputError(f"{flag} {out} is an existing file, not an output folder")
        if out.is_dir() and not is_our_output(out) and any(out.iterdir()):
            raise InputError(f"{flag} {out} is an existing folder that this project did not write; refusing to "
                             "replace it (its files would be lost): remove it or choose another path")
    else:
        check_replaceable_file(out, flag)
    check_writable(out, flag)
    return out


def check_replaceable_file(path: Path, flag: str) -> None:
    """A file output may replace only a file this project wrote."""
    if path.is_dir():
        raise InputError(f"{flag} {path} is an existing folder, not an output file")
    if path.exists() and not is_our_output(path):
        raise InputError(f"{flag} {path} is an existing file that this project did not write; refusing to "
                         "replace it: remove it or choose another path")


def check_output_dir(path: str | os.PathLike, flag: str, inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """:func:`check_output` for an output folder."""
    return check_output(path, flag, inputs, "folder")


def check_output_file(path: str | os.PathLike, flag: str, inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """:func:`check_output` for an output file."""
    return check_output(path, flag, inputs, "file")


def claim_output_dir(path: str | os.PathLike) -> None:
    """An output folder filled over a run (train.py's checkpoints, then the model), checked with
    :func:`check_output_dir` before: created and marked at the start, so a rerun may resume in it."""
    Path(path).mkdir(parents=True, exist_ok=True)
    mark_output(path)


def keep_umask(root: str | os.PathLike) -> None:
    """Give every file and folder under ``root`` the mode the user's umask asks for: libraries that
    save through private temporary files (safetensors) leave them 0600."""
    mask = _umask()
    for folder, dirs, files in os.walk(root):
        os.chmod(folder, 0o777 & ~mask)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & 0o111
                os.chmod(path, (0o777 if executable else 0o666) & ~mask)


def finish_output(folder: str | os.PathLike) -> None:
    """A complete output folder: the user's umask, and our marker."""
    keep_umask(folder)
    mark_output(folder)


@contextlib.contextmanager
def disk_full_is_input_error(final: Path) -> Iterator[None]:
    """A full disk while writing ``final`` ends the run with one line (nothing was replaced)."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise InputError(f"no space left on the device writing {final} ({exc.strerror}); nothing was replaced: "
                         "free some space and run again") from None


def check_writable(path: str | os.PathLike, flag: str) -> None:
    """``path`` can be created or replaced: its nearest existing parent is a folder we may write in."""
    out = Path(path).expanduser()
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {out}: cannot write in {parent}")
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {out}: cannot write in this folder")


@contextlib.contextmanager
def scratch_dir(final_path: str | os.PathLike, kind: str = "scratch") -> Iterator[Path]:
    """A hidden working folder next to ``final_path``, removed at the end whatever happens."""
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_siblings(final)
    tmp = Path(tempfile.mkdtemp(prefix=_sibling_prefix(final, kind), dir=final.parent))
    _apply_umask(tmp, 0o777)
    try:
        with disk_full_is_input_error(final):
            yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``final_path``; on success it replaces ``final_path``."""
    final = Path(final_path)
    check_output_dir(final, "output")
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_siblings(final)
    tmp = Path(tempfile.mkdtemp(prefix=_sibling_prefix(final, "tmp"), dir=final.parent))
    _apply_umask(tmp, 0o777)
    try:
        with disk_full_is_input_error(final):
            yield tmp
            finish_output(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_path(tmp, final)


@contextlib.contextmanager
def build_lock(final_path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on building ``final_path`` (a hidden ``.NAME.lock`` file beside it).

    Processes that build the same cached output at once (parallel test workers, parallel pipeline
    jobs) take turns; each checks for a finished output after taking the lock, so only the first builds.
    """
    import fcntl

    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.with_name(f".{final.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def sole_writer(final_path: str | os.PathLike, flag: str) -> Iterator[None]:
    """Refuse a second run writing ``final_path`` while one runs (their records would be doubled);
    taken before the run reads what is already done."""
    import fcntl

    final = Path(final_path)
    created = [p for p in (final.parent, *final.parent.parents) if not p.exists()]
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = final.with_name(f".{final.name}.lock")
    while True:
        handle = open(lock, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise InputError(f"{flag} {final} is being written by another run right now; wait for it to finish "
                             "(a later run resumes where it stopped)") from None
        try:  # the lock file may have been removed by the run that held it: lock the current one
            if os.stat(lock).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # removed while still held, so no run locks a stale file
        handle.close()
        for folder in created:  # a run that wrote nothing leaves no empty folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()


def build_once(final_path: str | os.PathLike, is_built: Callable[[], bool], build: Callable[[], object]) -> Path:
    """Run ``build`` unless ``is_built()``; concurrent callers take turns under :func:`build_lock`."""
    if not is_built():
        with build_lock(final_path):
            if not is_built():
                build()
    return Path(final_path)


@contextlib.contextmanager
def atomic_file(final_path: str | os.PathLike, mode: str = "w", record: dict | None = None) -> Iterator:
    """Open a temporary file next to ``final_path``; on success it replaces ``final_path`` and is marked
    as ours (``record``: its provenance). A file this project did not write is never replaced."""
    final = Path(final_path)
    check_replaceable_file(final, "output")
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_siblings(final)
    fd, tmp_name = tempfile.mkstemp(prefix=_sibling_prefix(final, "tmp"), dir=final.parent)
    tmp = Path(tmp_name)
    try:
        _apply_umask(tmp, 0o666)
        with disk_full_is_input_error(final), os.fdopen(fd, mode) as handle:
            yield handle
        mark_file(final, record)  # before the file: a killed run never leaves an unmarked file of ours
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def replace_path(src: Path, final: Path) -> None:
    """Move ``src`` to ``final``, removing an older ``final`` first (folders cannot be replaced in one step).

    An existing folder is replaced only when it is one of ours (or empty); see :func:`check_output_dir`.
    """
    if final.is_dir() and not final.is_symlink():
        check_output_dir(final, "output")
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(src, final)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    else:
        os.replace(src, final)


def write_json(path: str | os.PathLike, obj, indent: int | None = 2, record: dict | None = None) -> None:
    with atomic_file(path, record=record) as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=indent)


def read_json(path: str | os.PathLike, flag: str, hint: str):
    """The JSON value in the file ``path`` given by ``flag``; a clear error when the file is missing
    (``hint`` says how to make it) or is not valid JSON."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{flag} {p}: no such file ({hint})")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{flag} {p}: not valid JSON ({exc})") from None


def save_dataset_atomic(dataset, path: str | os.PathLike, num_proc: int | None = None,
                        provenance: dict | None = None) -> None:
    """``save_to_disk`` into a temporary folder, then rename into place; ``provenance`` (what made
    the set, see :mod:`fusechat.provenance`) goes into the folder with it."""
    from datasets import DatasetDict

    kwargs = {}
    if isinstance(dataset, DatasetDict) and any(len(split) == 0 for split in dataset.values()):
        # datasets writes an empty split as zero shards, which load_from_disk cannot read back.
        kwargs["num_shards"] = {name: 1 for name, split in dataset.items() if len(split) == 0}
    with atomic_dir(path) as tmp:
        dataset.save_to_disk(str(tmp), num_proc=num_proc if num_proc and num_proc > 1 else None, **kwargs)
        if provenance is not None:
            from .provenance import write_record

            write_record(tmp, provenance)


def load_dataset_dir(path: str | os.PathLike, what: str = "dataset"):
    """Load a DatasetDict saved by ``save_to_disk``; a clear error if it is missing or not a dataset."""
    from datasets import load_from_disk

    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} folder not found: {p}")
    try:
        return load_from_disk(str(p))
    except FileNotFoundError as exc:
        raise InputError(f"{what} at {p} is not a saved dataset ({exc})") from exc
    except (OSError, ValueError) as exc:  # pyarrow: a truncated data-*.arrow ("Expected to be able to read")
        raise InputError(f"{what} at {p} is damaged ({str(exc).splitlines()[0]}); make it again") from None


def split_paths(paths: str) -> list[str]:
    """Comma-separated list of paths, as the reference scripts take them."""
    return [p.strip() for p in paths.split(",") if p.strip()]


def load_train_splits(paths: str, what: str):
    """``(datasets, names)`` for a comma-separated list of saved DatasetDicts (their train splits)."""
    from .schema import train_split

    names = split_paths(paths)
    if not names:
        raise InputError(f"no {what} given")
    return [train_split(load_dataset_dir(p, what), p) for p in names], names


def check_set_output(path: str | None, flag: str, *inputs: str | None) -> None:
    """Before any work: the output can be written and replaces neither an input (comma-separated
    lists) nor a folder this project did not write."""
    if path:
        check_output_dir(path, flag, [p for paths in inputs if paths for p in split_paths(paths)])


def save_train_split(dataset, path: str | os.PathLike, num_proc: int | None = None,
                     ids_from: list[str] | None = None, kind: str = "derived", record: dict | None = None) -> None:
    """Save ``dataset`` as the train split of a DatasetDict at ``path``, atomically, with its provenance
    ``record``, or else that of ``ids_from``, the sets whose token ids it keeps (so train.py can check
    the tokenizer)."""
    from datasets import DatasetDict

    from . import provenance
    from .schema import SPLIT

    if record is None and ids_from:
        record = provenance.derived_record(provenance.first_record(ids_from), kind, ids_from)
    save_dataset_atomic(DatasetDict({SPLIT: dataset}), path, num_proc, provenance=record)
    logging.getLogger("fusechat").info("saved %d rows to %s", len(dataset), path)
