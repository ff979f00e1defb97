"""Token alignment kernel (docs/design.md 6.1) vs the literal pure-Python oracle, same inputs.

    python benchmarks/bench_token_alignment.py [--sizes 256,1024,2048] [--repeats 5]

Inputs: one mixed text (Python source with English docstrings, Chinese, emoji, whitespace runs),
cut at the character length where the OpenChat encoding reaches the requested size; base =
OpenChat decoded tokens, blending = Qwen decoded tokens of the same prefix. Prints, per size, the
kernel's median time, the oracle's time, their ratio, and whether the outputs are identical.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from token_alignment_oracle import literal_align_tokens  # noqa: E402

from text_sizes import prefix_with_tokens  # noqa: E402
from fusechat import fixtures  # noqa: E402
from fusechat.kernels.dtw import align_tokens, decoded_token_strings  # noqa: E402

CHINESE = "知识融合是一种将多个大型语言模型的能力整合到一个模型中的方法，它不需要重新训练所有模型。"
EMOJI = "Great job 🎉🎉! Let's celebrate 🥳👍🏽 with 🍕 and 🍺…   done ✔️"


def mixed_text() -> str:
    lines = inspect.getsource(textwrap).splitlines()
    chunks = []
    for start in range(0, len(lines), 25):
        chunks.extend(lines[start:start + 25])
        chunks.append(CHINESE if (start // 25) % 2 == 0 else EMOJI)
    return "\n".join(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256,1024,2048", help="base (OpenChat) token counts")
    parser.add_argument("--repeats", type=int, default=5, help="kernel runs per size (median reported)")
    args = parser.parse_args()

    base_tok, blending_tok = fixtures.load_tokenizer("openchat"), fixtures.load_tokenizer("qwen")
    text = mixed_text()
    started = time.perf_counter()
    align_tokens(["a"], ["a"], "▁", "Ġ")
    print(f"first call (numba compile or cache load): {time.perf_counter() - started:.2f} s")

    print(f"{'base':>6} {'blend':>6} {'kernel ms':>10} {'oracle s':>9} {'ratio':>8}  identical")
    for size in (int(s) for s in args.sizes.split(",")):
        prefix = prefix_with_tokens(base_tok, text, size)
        base = decoded_token_strings(base_tok, base_tok.encode(prefix))
        blending = decoded_token_strings(blending_tok, blending_tok.encode(prefix))

        kernel_times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            fast = align_tokens(base, blending, "▁", "Ġ")
            kernel_times.append(time.perf_counter() - started)
        kernel_time = statistics.median(kernel_times)

        started = time.perf_counter()
        literal = literal_align_tokens(base, blending, "▁", "Ġ")
        oracle_time = time.perf_counter() - started

        print(f"{len(base):>6} {len(blending):>6} {kernel_time * 1e3:>10.2f} {oracle_time:>9.2f} "
              f"{oracle_time / kernel_time:>7.0f}x  {fast == literal}")


if __name__ == "__main__":
    main()
