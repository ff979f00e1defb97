"""Merging samples files of one source (one per seed, or per decode run) by prompt_id ([S] post_process.py).

[S] paired seed files by position in ``os.listdir`` order; here rows are matched by prompt_id and
the seeds keep the order the files are given in (docs/design.md 13.6.1 #11). Prompts whose responses are
all identical carry no preference and are dropped, counted and listed ([S] post_process.py:28-31).
"""

from __future__ import annotations

from ..errors import InputError


def merge_samples(files: list[tuple[str, list[dict]]]) -> tuple[list[dict], list[str]]:
    """``(merged rows, prompt ids dropped as all identical)``; ``files`` holds (path, rows) of one source."""
    first_path, first_rows = files[0]
    source, sampling = first_rows[0]["source"], first_rows[0]["sampling"]
    ids = [r["prompt_id"] for r in first_rows]
    merged = {pid: {**row, "responses": [], "finish_reasons": [], "seeds": []} for pid, row in
              zip(ids, first_rows)}
    for path, rows in files:
        by_id = {r["prompt_id"]: r for r in rows}
        if set(by_id) != set(ids):
            missing = sorted(set(ids) ^ set(by_id))[0]
            raise InputError(f"{path}: prompt_id {missing!r} is in only one of {first_path} and {path}; "
                             "the files must hold the same prompts")
        for pid, row in by_id.items():
            if row["source"] != source:
                raise InputError(f"{path}: prompt_id {pid!r} comes from source {row['source']!r}, not {source!r}")
            if row["sampling"] != sampling:
                raise InputError(f"{path}: prompt_id {pid!r} was sampled with other settings than {first_path}")
            target = merged[pid]
            repeated = set(target["seeds"]) & set(row["seeds"])
            if repeated:
                raise InputError(f"{path}: prompt_id {pid!r} has seed {sorted(repeated)[0]} twice")
            for key in ("responses", "finish_reasons", "seeds"):
                target[key] = target[key] + row[key]
    identical = [pid for pid in ids if all_identical(merged[pid]["responses"])]
    return [merged[pid] for pid in ids if pid not in identical], identical


def all_identical(responses: list[str]) -> bool:
    return len(responses) > 1 and len(set(responses)) == 1
