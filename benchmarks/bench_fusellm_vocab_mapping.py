"""FuseLLM vocabulary mapping (docs/design.md 12.3, ``default``): the exact shell search vs the literal search.

    python benchmarks/bench_fusellm_vocab_mapping.py [--sample 20] [--workers 2]

Source = the byte-level Qwen1.5 vocabulary (151,646 pieces, standing in for MPT), pivot = Mistral v1
SentencePiece (32,000, standing in for Llama-2). Prints the time of the whole mapping, the time per
entry of the literal definition (pure-Python Levenshtein over the whole pivot vocabulary, first
strict minimum) and of the exhaustive C++ search (rapidfuzz cdist + argmin), both measured on a
sample of entries and extrapolated to every entry that is not an exact hit, their ratios, and
whether the sampled entries are identical.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fusellm_oracle import literal_mined_entry  # noqa: E402
from fusechat import fixtures  # noqa: E402
from fusechat.fusellm.vocab_mapping import default_vocab_mapping, ordered_pieces  # noqa: E402
from fusechat.kernels.mined import levenshtein_matrix  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=20, help="entries timed with the literal search")
    parser.add_argument("--workers", type=int, default=2, help="threads of the distance search")
    args = parser.parse_args()

    base = ordered_pieces(fixtures.load_tokenizer("mistral"))
    blending = ordered_pieces(fixtures.load_tokenizer("qwen"))
    wall, cpu = time.perf_counter(), time.process_time()
    mapping = default_vocab_mapping(blending, base, "\u0120", "\u2581", workers=args.workers, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    base_set = set(base)
    searched = [key for key in mapping if key not in base_set]
    print(f"pivot {len(base)} pieces, source {len(blending)} pieces, {len(searched)} searched (not exact hits)")
    print(f"shell search, whole mapping: {wall:.1f} s wall, {cpu:.1f} s CPU ({args.workers} threads)")

    rng = np.random.default_rng(0)
    sample = [searched[i] for i in rng.choice(len(searched), args.sample, replace=False)]
    started = time.perf_counter()
    literal = {key: literal_mined_entry(key, base) for key in sample}
    literal_time = (time.perf_counter() - started) / len(sample) * len(searched)
    wide = [searched[i] for i in rng.choice(len(searched), min(2000, len(searched)), replace=False)]
    started = time.perf_counter()
    exhaustive = levenshtein_matrix(wide, base, args.workers).argmin(axis=1)
    exhaustive_time = (time.perf_counter() - started) / len(wide) * len(searched)
    identical = all(mapping[key] == literal[key] for key in sample) and all(
        mapping[key] == base[choice] for key, choice in zip(wide, exhaustive.tolist()))
    print(f"literal (pure Python), extrapolated from {len(sample)} entries: {literal_time:.0f} s "
          f"-> ratio {literal_time / wall:.0f}x")
    print(f"exhaustive C++ cdist, extrapolated from {len(wide)} entries: {exhaustive_time:.1f} s "
          f"-> ratio {exhaustive_time / wall:.1f}x")
    print(f"identical on the sampled entries: {identical}")


if __name__ == "__main__":
    main()
