"""FuseLLM alignment of one 2048-token sample (docs/design.md 12.4: DTW + distributions) vs the literal definition.

    python benchmarks/bench_fusellm_alignment.py [--size 2048] [--repeats 3]

Pivot = Mistral v1 pieces (for Llama-2), source = byte-level Qwen1.5 pieces (for MPT) of the same
mixed text (code, English, Chinese, emoji), cut at ``--size`` pivot tokens; the source's top-10 are
seeded random ids around its own tokens, a few of them beyond the tokenizer (as MPT's wider logit
layer gives). ``soft`` uses the MinED mapping of the pieces involved (each entry is the same as in the
whole mapping). Prints the kernel's median time, the literal oracle's time, their ratio and whether
the outputs are identical, for hard and soft.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_token_alignment import mixed_text  # noqa: E402
from fusellm_oracle import literal_distributions  # noqa: E402
from text_sizes import prefix_with_tokens  # noqa: E402
from fusechat import fixtures  # noqa: E402
from fusechat.fusellm.common import encode_documents  # noqa: E402
from fusechat.fusellm.token_alignment import AlignmentTables, align_row, piece_table  # noqa: E402
from fusechat.fusellm.vocab_mapping import default_vocab_mapping, ordered_pieces  # noqa: E402

SP, BL = "\u2581", "\u0120"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    pivot, source = fixtures.load_tokenizer("mistral"), fixtures.load_tokenizer("qwen")
    text = prefix_with_tokens(pivot, mixed_text(), args.size)  # counted with BOS: size - 1 tokens + EOS
    base_ids = encode_documents(pivot, [text], args.size)[0]
    blend_ids = encode_documents(source, [text], 4096)[0]
    rng = np.random.default_rng(0)
    width = len(source) + 290
    indices = [[t] + rng.choice(blend_ids, 7).tolist() + rng.integers(0, width, 2).tolist() for t in blend_ids]
    logits = [sorted(np.round(rng.normal(size=10), 2).astype(np.float16).astype(float).tolist(), reverse=True)
              for _ in blend_ids]
    base_table, blend_table = piece_table(pivot), piece_table(source, width)
    involved = sorted({i for row in indices for i in row if i < len(source)} | set(blend_ids))
    mapping = default_vocab_mapping([blend_table[i] for i in involved], ordered_pieces(pivot), BL, SP, progress=False)
    base_vocab = dict(enumerate(base_table))
    blend_vocab = {i: p for i, p in enumerate(blend_table) if p is not None}
    print(f"pivot {len(base_ids)} tokens, source {len(blend_ids)} tokens")
    align_row(base_ids[:2], blend_ids[:2], logits, indices,
              AlignmentTables.build(base_table, blend_table, SP, BL, "hard"))  # numba compile / cache load
    for align_type in ("hard", "soft"):
        tables = AlignmentTables.build(base_table, blend_table, SP, BL, align_type, mapping)
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            fast = align_row(base_ids, blend_ids, logits, indices, tables)
            times.append(time.perf_counter() - started)
        started = time.perf_counter()
        literal = literal_distributions(base_ids, blend_ids, logits, indices, base_vocab, blend_vocab, SP, BL,
                                        align_type, mapping)
        literal_time = time.perf_counter() - started
        fast_time = statistics.median(times)
        print(f"{align_type}: kernel {fast_time * 1e3:.1f} ms, literal {literal_time:.1f} s, "
              f"ratio {literal_time / fast_time:.0f}x, identical {fast == literal}")


if __name__ == "__main__":
    main()
