"""Evaluation fast paths vs the straightforward ones (docs/design.md 10).

    python benchmarks/bench_eval.py [--prompts 16] [--max-new-tokens 32] [--batch-size 16]
                                    [--matches 64] [--latency 0.05] [--parallel 8]

Generation. The tiny fixture pivot (openchat_3.5 template) answers ``--prompts`` single-turn
questions greedily with ``--max-new-tokens`` new tokens (no early stop: random weights). Fast
path: ``ChatGenerator`` with left-padded batches of ``--batch-size``; straightforward: the same
generator one prompt at a time, as FastChat's gen_model_answer does. Prints both times, the
ratio, and whether the replies are identical.

Judging. ``--matches`` single-grading matches against a local stub chat-completions server that
answers each request after ``--latency`` seconds (standing in for a remote judge). Fast path:
``run_judging(parallel=--parallel)``; straightforward: ``parallel=1``. Prints both times and the
ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fusechat import fixtures
from fusechat.eval.generate import load_generator
from fusechat.eval.judge import ChatCompletionsClient, Judge, Match, run_judging

PROMPT = {"name": "single-v1", "type": "single", "system_prompt": "S", "output_format": "[[rating]]",
          "prompt_template": "{question}|{answer}"}


def bench_generation(prompts: int, max_new_tokens: int, batch_size: int) -> None:
    generator = load_generator(str(fixtures.build_tiny_model(fixtures.PIVOT)), "openchat_3.5", batch_size=batch_size)
    # never stop early, so both paths generate exactly max_new_tokens per prompt
    generator.prompt_format = dataclasses.replace(generator.prompt_format, stop_token_ids=frozenset())
    conversations = [[("user", f"Question {i}: " + "tell me about rivers and mountains " * (1 + i % 5))]
                     for i in range(prompts)]
    generator.generate(conversations[:2], 0.0, 2)  # warm-up
    start = time.perf_counter()
    batched = generator.generate(conversations, 0.0, max_new_tokens)
    fast = time.perf_counter() - start
    generator.batch_size = 1
    start = time.perf_counter()
    single = generator.generate(conversations, 0.0, max_new_tokens)
    slow = time.perf_counter() - start
    print(f"generation, {prompts} prompts x {max_new_tokens} new tokens (tiny pivot, CPU):")
    print(f"  batched ({batch_size}):      {fast:8.3f} s  ({prompts / fast:7.2f} prompts/s)")
    print(f"  one at a time:     {slow:8.3f} s  ({prompts / slow:7.2f} prompts/s)")
    print(f"  speed-up: {slow / fast:.2f}x; identical replies: {batched == single}")


class SlowJudge(BaseHTTPRequestHandler):
    latency = 0.05

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.latency)
        data = json.dumps({"choices": [{"message": {"content": "Rating: [[7]]"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def bench_judging(matches: int, latency: float, parallel: int) -> None:
    SlowJudge.latency = latency
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowJudge)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    client = ChatCompletionsClient(f"http://127.0.0.1:{server.server_address[1]}/v1", timeout=30, max_retries=0)
    judge = Judge("stub", PROMPT)
    plays = [Match({"question_id": i, "category": "writing", "turns": [f"q{i}"]}, "m",
                   {"question_id": i, "choices": [{"index": 0, "turns": [f"a{i}"]}]}, judge) for i in range(matches)]
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (parallel, 1):
            start = time.perf_counter()
            summary = run_judging(plays, client, Path(tmp) / f"judgments-{n}.jsonl", parallel=n)
            times[n] = time.perf_counter() - start
            assert summary.judged == matches
    server.shutdown()
    print(f"judging, {matches} matches, {latency * 1000:.0f} ms per request (local stub):")
    print(f"  --parallel {parallel}:       {times[parallel]:8.3f} s  ({matches / times[parallel]:7.2f} judgments/s)")
    print(f"  --parallel 1:       {times[1]:8.3f} s  ({matches / times[1]:7.2f} judgments/s)")
    print(f"  speed-up: {times[1] / times[parallel]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--matches", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    bench_generation(args.prompts, args.max_new_tokens, args.batch_size)
    bench_judging(args.matches, args.latency, args.parallel)


if __name__ == "__main__":
    main()
