"""FuseLLM packing (docs/design.md 12.5): the streaming Arrow packer vs the literal in-memory packer.

    python benchmarks/bench_fusellm_packing.py [--rows 2000] [--workers 8] [--batch_size 100]

A synthetic aligned set (pivot top-10 and two sources' aligned lists per token, three metrics) is
saved to disk; each packer runs in its own process and reads it: the streaming one writes its
packed rows to an Arrow file batch by batch (as packing.py does), the literal one (a transcription
of the reference's map) holds the split as Python lists. Prints each one's time and peak resident
memory (private memory taken during the run, sampled; and peak RSS, which also counts the pages of the
memory-mapped input that were read), their ratios, and whether the packed rows are identical.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fusellm_oracle import literal_pack  # noqa: E402


def synthetic_set(rows: int, seed: int = 0):
    from datasets import Dataset, Features, List, Value

    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 1200, rows)

    def generate():
        for n in lengths.tolist():
            yield {
                "input_ids": rng.integers(0, 32000, n).tolist(),
                "per_step_logits": rng.normal(size=(n, 10)).astype(np.float16).tolist(),
                "per_step_indices": rng.integers(0, 32000, (n, 10)).tolist(),
                "metric_ce": float(np.float16(rng.uniform(1, 4))),
                "per_step_aligned_logits_0": [[1.0]] * n,
                "per_step_aligned_indices_0": rng.integers(0, 32000, (n, 1)).tolist(),
                "metric_ce_aligned_0": float(np.float16(rng.uniform(1, 4))),
                "per_step_aligned_logits_1": [[]] * n,
                "per_step_aligned_indices_1": [[]] * n,
                "metric_ce_aligned_1": float(np.float16(rng.uniform(1, 4))),
            }

    half, ids = List(List(Value("float16"))), List(List(Value("uint16")))
    features = Features({"input_ids": List(Value("int32")), "per_step_logits": half, "per_step_indices": ids,
                         "metric_ce": Value("float16"), "per_step_aligned_logits_0": half,
                         "per_step_aligned_indices_0": ids, "metric_ce_aligned_0": Value("float16"),
                         "per_step_aligned_logits_1": half, "per_step_aligned_indices_1": ids,
                         "metric_ce_aligned_1": Value("float16")})
    return Dataset.from_generator(generate, features=features)


def digests(rows) -> list:
    """Every column of every packed row, hashed (metrics kept exactly)."""
    import hashlib

    return [[value if isinstance(value, float) else hashlib.sha1(repr(value).encode()).hexdigest()
             for _, value in sorted(row.items())] for row in rows]


class PeakPrivateMemory:
    """Peak anonymous (private) resident memory of this process, sampled every 5 ms.

    Peak RSS also counts the pages of the memory-mapped input set that were read, which the OS can
    drop at will and which both packers touch alike; RssAnon is what a packer itself holds.
    """

    def __init__(self):
        import threading

        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def now() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            self._stop.wait(0.005)

    def __enter__(self):
        self.start = self.now()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        """Private memory taken on top of what the process held before the packer started."""
        return max(self.peak - self.start, 0)


def run_one(kind: str, folder: str, workers: int, batch_size: int) -> None:
    """In a child process: pack, report time, private memory taken and peak RSS, write the digests."""
    from datasets import Dataset, load_from_disk
    from datasets.arrow_writer import ArrowWriter

    from fusechat.fusellm.packing import packed_tables

    dataset = load_from_disk(folder + "/set")
    started = time.perf_counter()
    with PeakPrivateMemory() as private:
        if kind == "streaming":
            with ArrowWriter(path=folder + "/packed.arrow") as writer:
                for table in packed_tables(dataset, 2048, workers, batch_size):
                    writer.write_table(table)
                writer.finalize()
        else:
            columns = {name: dataset[name] for name in dataset.column_names}
            packed = literal_pack(columns, 2048, workers, batch_size)
        elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before reading the rows back
    if kind == "streaming":
        rows = Dataset.from_file(folder + "/packed.arrow").to_list()
    else:
        rows = [{name: packed[name][r] for name in packed} for r in range(len(packed["input_ids"]))]
    Path(folder, f"{kind}.json").write_text(json.dumps({"seconds": elapsed, "peak": peak,
                                                        "private": private.growth, "rows": digests(rows)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args.child, args.folder, args.workers, args.batch_size)
        return
    with tempfile.TemporaryDirectory() as folder:
        dataset = synthetic_set(args.rows)
        dataset.save_to_disk(folder + "/set")
        tokens = int(sum(len(r) for r in dataset.with_format("arrow")["input_ids"].to_pylist()))
        print(f"{args.rows} rows, {tokens} tokens; num_workers {args.workers}, batch_size {args.batch_size}")
        results = {}
        for kind in ("streaming", "literal"):
            subprocess.run([sys.executable, __file__, "--child", kind, "--folder", folder, "--workers",
                            str(args.workers), "--batch_size", str(args.batch_size)], check=True)
            results[kind] = json.loads(Path(folder, f"{kind}.json").read_text())
            print(f"{kind:>9}: {results[kind]['seconds']:.1f} s, private memory taken "
                  f"{results[kind]['private'] / 2**20:.0f} MiB (peak RSS with the mapped input set "
                  f"{results[kind]['peak'] / 2**20:.0f} MiB)")
        fast, slow = results["streaming"], results["literal"]
        print(f"time ratio {slow['seconds'] / fast['seconds']:.0f}x, "
              f"private memory ratio {slow['private'] / max(fast['private'], 1):.1f}x, "
              f"{len(fast['rows'])} packed rows, identical {fast['rows'] == slow['rows']}")


if __name__ == "__main__":
    main()
