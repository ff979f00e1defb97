"""What made a set: a record saved in every tokenized, representation and aligned set.

A tokenized set is only valid for the tokenizer, template, separator, length limit, label masking,
corpus and split that produced it. ``get_data_representation`` reuses an existing
``--tknz_dataset_path``; without a record it could not tell a set made for another model or
another split from the right one, and would capture representations on the wrong token ids.
The record lives in the set's folder as :data:`RECORD_FILE`; later stages copy the record of the
set whose token ids they keep, so ``train.py`` can refuse a set tokenized for another model.

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
    """The record saved in a set's folder; None for a set without one (made before records existed)."""
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


def first_record(paths: list[str]) -> dict | None:
    """The record of the first set of a list whose sets share one tokenizer; a mix is an error."""
    records = [(p, read_record(p)) for p in paths]
    known = [(p, r) for p, r in records if r is not None]
    for path, record in known[1:]:
        if record["tokenizer"]["fingerprint"] != known[0][1]["tokenizer"]["fingerprint"]:
            raise InputError(f"{path} was tokenized with {record['tokenizer']['path']!r} but {known[0][0]} with "
                             f"{known[0][1]['tokenizer']['path']!r}: the sets of one list must share a tokenizer")
    return known[0][1] if known else None


def check_sets_tokenizer(paths: list[str], tokenizer, tokenizer_path: str, flag: str = "--data_path") -> None:
    """Refuse sets whose record names another tokenizer than the model's (ids would mean other tokens)."""
    mine = None
    for path in paths:
        record = read_record(path) if Path(path).is_dir() else None
        if record is None:
            continue
        mine = mine or tokenizer_fingerprint(tokenizer)
        theirs = record["tokenizer"]
        if theirs["fingerprint"] != mine["fingerprint"]:
            raise InputError(f"{flag} {path} was tokenized with {theirs['path']!r} ({theirs['size']} tokens), "
                             f"not with the tokenizer of {tokenizer_path} ({mine['size']} tokens): its token ids "
                             "mean other tokens for this model")


def check_reuse(path: str | os.PathLike, expected: dict, flag: str) -> None:
    """An existing set may be reused only when its record matches this run's settings."""
    found = read_record(path)
    if found is None:
        logger.warning(
            "%s %s has no provenance record (made by an older version): its settings cannot be checked", flag, path)
        return
    found_differences = differences(expected, found)
    if found_differences:
        raise InputError(describe(f"{flag} {path}", found_differences)
                         + "; remove it or give another path to tokenize again")
