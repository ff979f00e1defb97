"""What made a set: a record saved in every tokenized, representation and aligned set.

A tokenized set is only valid for the tokenizer, template, separator, length limit, label masking,
corpus and split that produced it. ``get_data_representation`` reuses an existing
``--tknz_dataset_path``; without a record it could not tell a set made for another model or
another split from the right one, and would capture representations on the wrong token ids.
The record lives in the set's folder as :data:`RECORD_FILE`; later stages copy the record of the
set whose token ids they keep, so ``train.py`` can refuse a set tokenized for another model.

FuseLLM's sets carry records too (:func:`fusellm_record`). A set without a record is refused
wherever a stage reads it, unless the user passes :data:`ACCEPT_FLAG` (the same flag in every script).
Matrix and mapping files keep their record in their output marker (:func:`fusechat.storage.file_record`).

Pure functions build and compare records; :func:`read_record` and :func:`write_record` are the I/O.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from .errors import InputError

logger = logging.getLogger(__name__)
RECORD_FILE = "fusechat_provenance.json"
ACCEPT_FLAG = "--accept_sets_without_provenance"
ACCEPT_HELP = ("use sets (and matrix or mapping files) that carry no provenance record as they are; without it "
               "they are refused, since the tokenizer and settings that made them cannot be checked")
# Encoded with special tokens: catches normalisation, BOS/EOS and pre-tokenizer differences that
# a vocabulary alone would not show.
PROBE_TEXT = "Hello, world! 12345  tabs\tand\nnewlines; ünïcödé 你好 🙂"
# Settings that decide the token ids and labels of a tokenized set, in the order they are reported.
SETTINGS = ("conv_temp", "separator", "model_max_length", "mask_instruction", "sample_prop", "split_num",
            "split_index", "skip_invalid")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def tokenizer_fingerprint(tokenizer) -> dict:
    """Identity of a tokenizer: a hash over its vocabulary, special tokens and a probe encoding."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    probe = tokenizer(PROBE_TEXT, add_special_tokens=True)["input_ids"]
    special = {name: getattr(tokenizer, name, None) for name in ("bos_token", "eos_token", "unk_token")}
    return {"fingerprint": _digest([vocab, probe, special]), "size": len(tokenizer)}


def file_fingerprint(path: str | os.PathLike) -> str | None:
    """Hash of a file's bytes; None when it does not exist (nothing to compare against)."""
    p = Path(path)
    if not p.is_file():
        return None
    digest = hashlib.sha256()
    with open(p, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def tokenized_record(tokenizer, tokenizer_path: str, conv_temp: str, separator: str, model_max_length: int,
                     mask_instruction: bool, data_path: str, corpus_fingerprint: str | None,
                     sample_prop: float | None = None, split_num: int | None = None,
                     split_index: int | None = None, skip_invalid: bool = False) -> dict:
    """The record of a tokenized set made with these settings."""
    return {
        "kind": "tokenized",
        "tokenizer": {"path": str(tokenizer_path), **tokenizer_fingerprint(tokenizer)},
        "corpus": {"path": str(data_path), "fingerprint": corpus_fingerprint},
        "conv_temp": conv_temp, "separator": separator, "model_max_length": model_max_length,
        "mask_instruction": bool(mask_instruction), "sample_prop": sample_prop, "split_num": split_num,
        "split_index": split_index, "skip_invalid": bool(skip_invalid),
    }


def fusellm_record(tokenizer, tokenizer_path: str, model_max_length: int, inputs: list[str]) -> dict:
    """The record of a FuseLLM set of token ids (forward_for_logits.py's output)."""
    return {"kind": "fusellm_logits", "tokenizer": {"path": str(tokenizer_path), **tokenizer_fingerprint(tokenizer)},
            "model_max_length": model_max_length, "inputs": [str(p) for p in inputs]}


def sets_record(paths: list[str]) -> dict:
    """What a matrix or mapping file was made from: the records of its sets, by fingerprint."""
    return {"kind": "sets", "sets": [_digest(read_record(p)) for p in paths]}


def token_pass_record(base_tokenizer, blending_tokenizer, set_paths: list[str]) -> dict:
    """What the token pass's matrix, mapping and token alignments are made from: both tokenizers and
    the sets (by their records)."""
    return {"kind": "token_pass", "base_tokenizer": tokenizer_fingerprint(base_tokenizer)["fingerprint"],
            "blending_tokenizer": tokenizer_fingerprint(blending_tokenizer)["fingerprint"],
            "sets": [_digest(read_record(p)) for p in set_paths]}


REUSE_NAMES = {"base_tokenizer": "base tokenizer", "blending_tokenizer": "blending tokenizer",
               "sets": "sets", "align_type": "--align_type"}


def check_made_from(path: str | os.PathLike, expected: dict, flag: str, accept: bool = False,
                    keys: tuple[str, ...] | None = None) -> None:
    """An existing matrix, mapping or set of token alignments may be reused only when its record
    matches this run in ``keys`` (all of ``expected`` by default)."""
    found = required_record(path, flag, accept)
    if found is None:
        return
    differ = [REUSE_NAMES.get(k, k) for k in (keys or tuple(expected)) if found.get(k) != expected.get(k)]
    if differ:
        raise InputError(f"{flag} {path} was made for another run (its {' and '.join(differ)} differ from this "
                         "run's); remove it or give another path to make it again")


def derived_record(record: dict | None, kind: str, inputs: list[str]) -> dict | None:
    """The record of a set that keeps the token ids of the set ``record`` describes."""
    if record is None:
        return None
    return {**record, "kind": kind, "inputs": [str(p) for p in inputs]}


def differences(expected: dict, found: dict) -> list[str]:
    """What differs between the record a run expects and the record of an existing set.

    Paths alone may differ (sets and models move): tokenizers and corpora are compared by
    fingerprint. A corpus fingerprint of None (file gone) is not compared.
    """
    out = []
    want, have = expected.get("tokenizer", {}), found.get("tokenizer", {})
    if want.get("fingerprint") != have.get("fingerprint"):
        out.append(f"tokenizer: made with {have.get('path')!r} ({have.get('size')} tokens, fingerprint "
                   f"{have.get('fingerprint')}), this run uses {want.get('path')!r} ({want.get('size')} tokens, "
                   f"fingerprint {want.get('fingerprint')})")
    want, have = expected.get("corpus", {}), found.get("corpus", {})
    if want.get("fingerprint") and want.get("fingerprint") != have.get("fingerprint"):
        out.append(f"corpus: made from {have.get('path')!r} (fingerprint {have.get('fingerprint')}), this run "
                   f"reads {want.get('path')!r} (fingerprint {want.get('fingerprint')})")
    for name in SETTINGS:
        if expected.get(name) != found.get(name):
            out.append(f"{name}: {found.get(name)!r} in the set, {expected.get(name)!r} in this run")
    return out


def describe(where: str, found_differences: list[str]) -> str:
    return f"{where} was made with other settings: " + "; ".join(found_differences)


def read_record(path: str | os.PathLike) -> dict | None:
    """The record saved in a set's folder (or a file's marker); None for an output without one."""
    if Path(path).is_file():
        from .storage import file_record

        return file_record(path)
    p = Path(path) / RECORD_FILE
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: malformed provenance record ({exc.msg})") from exc


def write_record(folder: str | os.PathLike, record: dict) -> None:
    (Path(folder) / RECORD_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n",
                                            encoding="utf-8")


def add_accept_flag(parser) -> None:
    parser.add_argument(ACCEPT_FLAG, action="store_true", help=ACCEPT_HELP)


def required_record(path: str | os.PathLike, flag: str, accept: bool = False) -> dict | None:
    """The record of a set a stage reads; a set without one is refused unless ``accept``."""
    record = read_record(path)
    if record is None:
        if not accept:
            raise InputError(f"{flag} {path} has no provenance record ({RECORD_FILE}): the tokenizer and settings "
                             f"that made it cannot be checked; make it again, or pass {ACCEPT_FLAG} to use it as it is")
        logger.warning("%s %s has no provenance record; used as it is (%s)", flag, path, ACCEPT_FLAG)
    return record


def check_recorded(paths: list[str], flag: str, accept: bool = False) -> dict | None:
    """Before any work: every set of a list carries a record (unless ``accept``), all of one tokenizer;
    returns the first record."""
    for path in paths:
        if Path(path).is_dir():
            required_record(path, flag, accept)
    return first_record(paths)


def first_record(paths: list[str]) -> dict | None:
    """The record of the first set of a list whose sets share one tokenizer; a mix is an error."""
    records = [(p, read_record(p)) for p in paths]
    known = [(p, r) for p, r in records if r is not None]
    for path, record in known[1:]:
        if record["tokenizer"]["fingerprint"] != known[0][1]["tokenizer"]["fingerprint"]:
            raise InputError(f"{path} was tokenized with {record['tokenizer']['path']!r} but {known[0][0]} with "
                             f"{known[0][1]['tokenizer']['path']!r}: the sets of one list must share a tokenizer")
    return known[0][1] if known else None


def check_sets_tokenizer(paths: list[str], tokenizer, tokenizer_path: str, flag: str = "--data_path",
                         accept: bool = False) -> None:
    """Refuse sets whose record names another tokenizer than the model's (ids would mean other tokens),
    and sets without a record unless ``accept``."""
    mine = None
    for path in paths:
        record = required_record(path, flag, accept) if Path(path).is_dir() else None
        if record is None:
            continue
        mine = mine or tokenizer_fingerprint(tokenizer)
        theirs = record["tokenizer"]
        if theirs["fingerprint"] != mine["fingerprint"]:
            raise InputError(f"{flag} {path} was tokenized with {theirs['path']!r} ({theirs['size']} tokens), "
                             f"not with the tokenizer of {tokenizer_path} ({mine['size']} tokens): its token ids "
                             "mean other tokens for this model")


def check_reuse(path: str | os.PathLike, expected: dict, flag: str, accept: bool = False) -> None:
    """An existing set may be reused only when its record matches this run's settings."""
    found = required_record(path, flag, accept)
    if found is None:
        return
    found_differences = differences(expected, found)
    if found_differences:
        raise InputError(describe(f"{flag} {path}", found_differences)
                         + "; remove it or give another path to tokenize again")
