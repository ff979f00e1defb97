"""Memory and time of building the MS mapping (docs/design.md 6.2) for the OpenChat (pivot) / Qwen pair.

    python benchmarks/bench_ms_mapping_memory.py [--pairs 7000000] [--mined]

1. Count matrix C[base_id, blending_id], 32002 x 151646: from the real token alignments of the
   sample corpus (data/fusechat_sample.json), and a synthetic corpus-sized one: ``--pairs``
   (base id, blending id) coordinates, Zipf-distributed like token frequencies and correlated like
   alignments, fed through ``AlignmentCounts`` in 1M-pair batches (the default gives about 2M
   distinct pairs). Then ``ms_mapping`` on it.
2. Peak memory of (1): the process's peak resident set (VmHWM, reset first where Linux allows it)
   above the resident set before, and the tracemalloc peak (Python and numpy allocations). The
   reference's dense float64 matrix is computed, not allocated: 32002 x 151646 x 8 bytes, 36 GiB.
3. Time: ``ms_mapping`` against the straightforward per-column loop (dense column, Python distance
   per nonzero, sigmoid, argmin: the reference's structure) on the same 2000 columns, and the
   straightforward time extrapolated to every column.
4. ``--mined``: time and peak memory of the full MinED mapping (151646 Qwen pieces against 32002
   OpenChat pieces; minutes on two cores).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np
from rapidfuzz.distance import Levenshtein

from fusechat import fixtures
from fusechat.kernels.dtw import align_tokens, decoded_token_strings
from fusechat.alignment.vocab_mapping import (
    AlignmentCounts, Vocabulary, matched_blending_ids, mined_mapping, ms_mapping, vocabulary_of,
)
from fusechat.data import conversation_messages
from fusechat.templates import get_template, render_conversation

ROOT = Path(__file__).resolve().parents[1]
GIB = 2 ** 30
MIB = 2 ** 20


def resident_bytes(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process, in bytes; ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
        return True
    except OSError:
        return False


def measured(label: str, work, traced: bool = False):
    """Run work(); print its time and peak-RSS growth (and, if traced, the tracemalloc peak of a
    second run: tracing slows allocation, so it never shares a run with the timing)."""
    reset_peak()
    before = resident_bytes("VmRSS")
    started = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - started
    growth = resident_bytes("VmHWM") - before
    line = f"  {label:<46} {seconds:>6.1f} s   peak RSS +{growth / MIB:>5.0f} MiB"
    if traced:
        tracemalloc.start()
        work()
        line += f"   tracemalloc peak {tracemalloc.get_traced_memory()[1] / MIB:>5.0f} MiB"
        tracemalloc.stop()
    print(line)
    return result, seconds


def corpus_counts(base_tokenizer, blending_tokenizer, base: Vocabulary, blending: Vocabulary) -> AlignmentCounts:
    template = get_template("openchat_3.5")
    counts = AlignmentCounts(base.size, blending.size)
    records = json.loads((ROOT / "data" / "fusechat_sample.json").read_text(encoding="utf-8"))
    for index, record in enumerate(records):
        messages = conversation_messages(record, index)
        base_ids = base_tokenizer(render_conversation(template, messages, base_tokenizer.eos_token).text)["input_ids"]
        blending_ids = blending_tokenizer(
            render_conversation(template, messages, blending_tokenizer.eos_token).text)["input_ids"]
        alignment = align_tokens(decoded_token_strings(base_tokenizer, base_ids),
                                 decoded_token_strings(blending_tokenizer, blending_ids), base.marker, blending.marker)
        counts.add(base_ids, matched_blending_ids(blending_ids, alignment))
    return counts


def synthetic_counts(base: Vocabulary, blending: Vocabulary, pairs: int, seed: int = 0):
    """Zipf-distributed base ids, each aligned mostly to a few 'partner' blending ids."""
    rng = np.random.default_rng(seed)
    counts = AlignmentCounts(base.size, blending.size)
    for start in range(0, pairs, 1_000_000):
        size = min(1_000_000, pairs - start)
        rows = (rng.zipf(1.15, size) - 1) % base.size
        # A partner per base id, plus a geometric spread over neighbouring ids (segmentation noise).
        partner = (rows * 4729 + 17) % blending.size
        columns = (partner + rng.geometric(0.02, size) * rng.choice([-1, 1], size)) % blending.size
        counts.add_pairs(rows, columns)
    return counts.to_csr()


def straightforward_ms(counts_csc, blending: Vocabulary, base: Vocabulary, columns) -> list[int]:
    """The reference's structure: per blending id, a dense column, then a Python loop over its nonzeros."""
    mapping = []
    for b in columns:
        column = counts_csc[:, b].toarray().ravel()
        rows = np.nonzero(column)[0]
        if len(rows) == 0:
            mapping.append(base.no_token_id)
            continue
        scores = []
        for j in rows:
            a, c = blending.pieces[b], base.pieces[j]
            aa, cc = a.replace(blending.marker, ""), c.replace(base.marker, "")
            if not aa or not cc:
                aa, cc = a.replace(blending.marker, base.marker), c
            w = 0.1 if (aa in cc or cc in aa) else 1
            scores.append(Levenshtein.distance(aa, cc) * w * (1.0 / (1 + np.exp(-column[j]))))
        mapping.append(int(rows[int(np.argmin(scores))]))
    return mapping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=7_000_000, help="coordinates fed to the synthetic matrix")
    parser.add_argument("--columns", type=int, default=2000, help="columns timed against the straightforward loop")
    parser.add_argument("--mined", action="store_true", help="also time the full MinED mapping")
    args = parser.parse_args()

    openchat, qwen = fixtures.load_tokenizer("openchat"), fixtures.load_tokenizer("qwen")
    base, blending = vocabulary_of(openchat), vocabulary_of(qwen)
    dense_bytes = base.size * blending.size * 8
    print(f"pivot {base.size} ids, source {blending.size} ids; the dense float64 count matrix would take "
          f"{dense_bytes / GIB:.1f} GiB (computed, not allocated)")
    print(f"resident before the measurements (tokenizers, vocabularies): {resident_bytes('VmRSS') / MIB:.0f} MiB; "
          f"peak reset {'available' if reset_peak() else 'unavailable: peaks include the setup'}")

    print("\nreal alignments of the sample corpus")
    decoded_token_strings(openchat, [0]), decoded_token_strings(qwen, [0])
    real, _ = measured("count matrix (52 conversations)",
                       lambda: corpus_counts(openchat, qwen, base, blending).to_csr())
    measured(f"MS mapping ({real.nnz} nonzeros)", lambda: ms_mapping(real, blending, base), traced=True)

    print("\nsynthetic corpus-sized matrix")
    synthetic, _ = measured("count matrix (AlignmentCounts, 1M-pair batches)",
                            lambda: synthetic_counts(base, blending, args.pairs), traced=True)
    print(f"  {args.pairs:,} coordinates fed, {synthetic.nnz:,} nonzeros, "
          f"{(synthetic.data.nbytes + synthetic.indices.nbytes + synthetic.indptr.nbytes) / MIB:.0f} MiB as CSR "
          f"({dense_bytes / (synthetic.data.nbytes + synthetic.indices.nbytes + synthetic.indptr.nbytes):,.0f}x "
          f"smaller than dense)")
    mapping, full_seconds = measured(f"MS mapping ({synthetic.nnz:,} nonzeros)",
                                     lambda: ms_mapping(synthetic, blending, base), traced=True)
    peak = resident_bytes("VmHWM")
    print(f"  process peak resident set so far: {peak / MIB:.0f} MiB ({'under' if peak < GIB else 'OVER'} 1 GiB)")

    print(f"\ntime on the first {args.columns} columns with counts: ms_mapping vs the straightforward loop")
    csc = synthetic.tocsc()
    columns = np.flatnonzero(np.diff(csc.indptr))[:args.columns]
    sub_blending = Vocabulary(tuple(blending.pieces[c] for c in columns), blending.marker)
    sub_counts = csc[:, columns]
    started = time.perf_counter()
    fast = ms_mapping(sub_counts, sub_blending, base)
    fast_seconds = time.perf_counter() - started
    started = time.perf_counter()
    slow = straightforward_ms(csc, blending, base, columns.tolist())
    slow_seconds = time.perf_counter() - started
    print(f"  ms_mapping {fast_seconds:.3f} s, straightforward {slow_seconds:.2f} s: "
          f"{slow_seconds / fast_seconds:.0f}x; identical: {fast == slow}; also equal to the full mapping: "
          f"{[mapping[c] for c in columns] == fast}")
    per_column = slow_seconds / len(columns)
    print(f"  straightforward over all {blending.size} columns, extrapolated: {per_column * blending.size:.0f} s, "
          f"{per_column * blending.size / full_seconds:.0f}x the measured full ms_mapping")

    if args.mined:
        print("\nfull MinED mapping (soft), Qwen -> OpenChat")
        measured("mined_mapping", lambda: mined_mapping(blending, base, progress=False))


if __name__ == "__main__":
    main()
