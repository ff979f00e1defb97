"""Distribution alignment of one sample (docs/design.md 6.1 + 6.3) vs the literal oracle pipeline.

    python benchmarks/bench_distribution_alignment.py [--sizes 512,1024,2048] [--repeats 5]

Speed. Text: the message contents of data/fusechat_sample.json, cut where the OpenChat encoding
reaches the requested size; the Qwen encoding of the same prefix is the source. Each source
position gets ten candidates (the true next token first, then ids drawn from the text and from
the whole vocabulary) with descending logits. One sample = decode each id on its own, align the
tokens, align the distributions (``--align_type default --use_token_alignment_matrix``, the
published setting). Fast path: ``decoded_token_strings`` + ``DistributionAligner.align_sample``.
Oracle: per-id ``tokenizer.decode`` + the pure-Python DTW of tests/token_alignment_oracle.py + the
literal 6.3 transcription of tests/test_distribution_alignment.py; like the reference (which calls
the C ``editdistance``), the oracle's DTW takes its Levenshtein distances from a C library
(rapidfuzz), so its time is comparable to the reference's 0.30, 1.11 and 4.18 s. Prints both
times, the ratio, the ratio to those reference times, and whether the outputs are identical.

Quality. Over every conversation of the sample corpus (openchat_3.5 template, each tokenizer with
its own eos), the share of pivot positions that carry the source's distribution, per align type,
and the shares of ONE-HOT and EMPTY entries. The MS mapping (default) is built from the counts of
these very alignments; the MinED mapping (soft) is computed for the source ids that occur.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import token_alignment_oracle  # noqa: E402
from rapidfuzz.distance import Levenshtein  # noqa: E402
from distribution_alignment_oracle import oracle_align_distribution  # noqa: E402
from token_alignment_oracle import literal_align_tokens  # noqa: E402

from text_sizes import prefix_with_tokens  # noqa: E402
from fusechat import fixtures  # noqa: E402
from fusechat.alignment.distribution_alignment import DistributionAligner  # noqa: E402
from fusechat.kernels.distribution import EMPTY, ONE_HOT  # noqa: E402
from fusechat.kernels.dtw import align_tokens, decoded_token_strings  # noqa: E402
from fusechat.alignment.vocab_mapping import (  # noqa: E402
    AlignmentCounts, Vocabulary, matched_blending_ids, mined_mapping, ms_mapping, vocabulary_of,
)
from fusechat.data import conversation_messages  # noqa: E402
from fusechat.templates import get_template, render_conversation  # noqa: E402

CORPUS = ROOT / "data" / "fusechat_sample.json"
TOP_K = 10
REFERENCE_SECONDS = {512: 0.30, 1024: 1.11, 2048: 4.18}  # the reference pipeline, from the issue
SETTINGS = [("hard", False), ("soft", False), ("default", False), ("default", True)]


def corpus_records():
    return json.loads(CORPUS.read_text(encoding="utf-8"))


def candidates(rng, blending_ids: list[int], vocabulary_size: int):
    """Top-k lists: the true next token, then ids from the text (60%) or the whole vocabulary."""
    pool = np.asarray(blending_ids)
    indices = []
    for j in range(len(blending_ids)):
        rest = np.where(rng.random(TOP_K - 1) < 0.6, rng.choice(pool, TOP_K - 1),
                        rng.integers(0, vocabulary_size, TOP_K - 1))
        indices.append([blending_ids[min(j + 1, len(blending_ids) - 1)], *rest.tolist()])
    logits = [np.sort(rng.normal(size=TOP_K))[::-1].round(4).tolist() for _ in blending_ids]
    return logits, indices


def encode_corpus(tokenizer):
    template = get_template("openchat_3.5")
    return [tokenizer(render_conversation(template, conversation_messages(record, index), tokenizer.eos_token).text)
            ["input_ids"] for index, record in enumerate(corpus_records())]


def quality(base_tokenizer, blending_tokenizer, base: Vocabulary, blending: Vocabulary, rng) -> None:
    """Share of pivot positions carrying the source's distribution, per align type."""
    base_sequences, blending_sequences = encode_corpus(base_tokenizer), encode_corpus(blending_tokenizer)
    samples, counts = [], AlignmentCounts(base.size, blending.size)
    for base_ids, blending_ids in zip(base_sequences, blending_sequences):
        base_tokens = decoded_token_strings(base_tokenizer, base_ids)
        blending_tokens = decoded_token_strings(blending_tokenizer, blending_ids)
        alignment = align_tokens(base_tokens, blending_tokens, base.marker, blending.marker)
        counts.add(base_ids, matched_blending_ids(blending_ids, alignment))
        samples.append((base_ids, base_tokens, blending_ids, blending_tokens, alignment,
                        *candidates(rng, blending_ids, blending.size)))

    # MinED for the source ids that occur (the soft decision only looks those up), no_token elsewhere.
    occurring = sorted({i for sample in samples for i in sample[2]})
    started = time.perf_counter()
    partial = mined_mapping(Vocabulary(tuple(blending.pieces[i] for i in occurring), blending.marker), base,
                            progress=False)
    mined = [base.no_token_id] * blending.size
    for blending_id, base_id in zip(occurring, partial):
        mined[blending_id] = base_id
    mined_seconds = time.perf_counter() - started
    started = time.perf_counter()
    ms = ms_mapping(counts.to_csr(), blending, base)
    ms_seconds = time.perf_counter() - started
    print(f"  {len(samples)} conversations, {sum(len(s[0]) for s in samples)} pivot positions; "
          f"MinED for {len(occurring)} source ids {mined_seconds:.1f} s, MS mapping {ms_seconds:.1f} s")
    print(f"  {'align type':<28} {'carried':>8} {'ONE-HOT':>8} {'EMPTY':>8}")
    for align_type, use_matrix in SETTINGS:
        mapping = {"hard": None, "soft": mined, "default": ms}[align_type]
        aligner = DistributionAligner.create(align_type, blending, base, mapping, use_matrix)
        carried = one_hot = empty = total = 0
        for base_ids, base_tokens, blending_ids, blending_tokens, alignment, logits, indices in samples:
            rows = aligner.source_rows(base_ids, base_tokens, blending_ids, blending_tokens, alignment)
            _, fused_ids = aligner.align(base_ids, base_tokens, blending_ids, blending_tokens, alignment,
                                         logits, indices)
            has_entries = np.array([len(ids) > 0 for ids in fused_ids])
            carried += int(((rows >= 0) & has_entries).sum())
            one_hot += int((rows == ONE_HOT).sum())
            empty += int(((rows == EMPTY) | ((rows >= 0) & ~has_entries)).sum())
            total += len(rows)
        label = align_type + (" + alignment matrix" if use_matrix else "")
        print(f"  {label:<28} {carried / total:>7.1%} {one_hot / total:>8.1%} {empty / total:>8.1%}")


def speed(base_tokenizer, blending_tokenizer, base: Vocabulary, blending: Vocabulary, sizes, repeats, rng) -> None:
    text = "\n\n".join(message for index, record in enumerate(corpus_records())
                       for _, message in conversation_messages(record, index))
    mapping = rng.integers(0, base.size, blending.size).tolist()  # any valid mapping: speed only
    aligner = DistributionAligner.create("default", blending, base, mapping, use_token_alignment_matrix=True)
    # The reference's DTW calls a C edit distance: so does the oracle here (same distances).
    token_alignment_oracle.levenshtein = Levenshtein.distance
    print(f"{'base':>6} {'source':>6} {'fast ms':>9} {'oracle s':>9} {'ratio':>7} {'vs ref':>7}  identical")
    for size in sizes:
        prefix = prefix_with_tokens(base_tokenizer, text, size)
        base_ids, blending_ids = base_tokenizer.encode(prefix), blending_tokenizer.encode(prefix)
        logits, indices = candidates(rng, blending_ids, blending.size)

        def fast():
            base_tokens = decoded_token_strings(base_tokenizer, base_ids)
            blending_tokens = decoded_token_strings(blending_tokenizer, blending_ids)
            return aligner.align_sample(base_ids, base_tokens, blending_ids, blending_tokens, logits, indices)

        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fast_output = fast()
            times.append(time.perf_counter() - started)
        fast_seconds = min(times)  # the least disturbed run: the machine is shared

        started = time.perf_counter()
        base_tokens = [base_tokenizer.decode([i]) for i in base_ids]
        blending_tokens = [blending_tokenizer.decode([i]) for i in blending_ids]
        alignment = literal_align_tokens(base_tokens, blending_tokens, base.marker, blending.marker)
        oracle_output = oracle_align_distribution(
            "default", base_ids, base_tokens, blending_ids, blending_tokens, alignment, logits, indices,
            base_tokenizer.get_vocab(), blending.pieces, base.marker, blending.marker, mapping, True)
        oracle_seconds = time.perf_counter() - started
        reference = REFERENCE_SECONDS.get(size)
        versus_reference = f"{reference / fast_seconds:>6.0f}x" if reference else f"{'-':>7}"
        print(f"{len(base_ids):>6} {len(blending_ids):>6} {fast_seconds * 1e3:>9.1f} {oracle_seconds:>9.2f} "
              f"{oracle_seconds / fast_seconds:>6.0f}x {versus_reference}  {fast_output == oracle_output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="512,1024,2048", help="pivot (OpenChat) token counts")
    parser.add_argument("--repeats", type=int, default=7, help="fast-path runs per size (the fastest reported)")
    parser.add_argument("--skip_quality", action="store_true")
    parser.add_argument("--skip_speed", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    openchat, qwen = fixtures.load_tokenizer("openchat"), fixtures.load_tokenizer("qwen")
    started = time.perf_counter()
    vocabularies = {"openchat": vocabulary_of(openchat), "qwen": vocabulary_of(qwen)}
    decoded_token_strings(openchat, [0]), decoded_token_strings(qwen, [0])  # decode each vocabulary once
    align_tokens(["a"], ["a"], "\u2581", "\u0120")  # numba compile or cache load
    print(f"one-time setup (vocabularies, decoded vocabularies, kernel): {time.perf_counter() - started:.1f} s")

    if not args.skip_quality:
        for base_name, blending_name in (("openchat", "qwen"), ("qwen", "openchat")):
            tokenizers = {"openchat": openchat, "qwen": qwen}
            print(f"\nquality: pivot {base_name}, source {blending_name}")
            quality(tokenizers[base_name], tokenizers[blending_name], vocabularies[base_name],
                    vocabularies[blending_name], rng)
    if not args.skip_speed:
        print("\nspeed: pivot openchat, source qwen, default + alignment matrix, top-10")
        speed(openchat, qwen, vocabularies["openchat"], vocabularies["qwen"],
              [int(s) for s in args.sizes.split(",")], args.repeats, rng)


if __name__ == "__main__":
    main()
