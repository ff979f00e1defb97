"""A stub MT-Bench workspace and a stub OpenAI-compatible judge on 127.0.0.1, shared by the judging tests."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fusechat.eval.jsonl import read_jsonl

JUDGE = "judge-x"
MULTI_MARK = "<conversation>"  # only the multi-turn prompts below contain it

# Minimal judge prompts with FastChat's placeholders and fields.
PROMPTS = [
    {"name": "single-v1", "type": "single", "system_prompt": "SYS", "output_format": "[[rating]]",
     "prompt_template": "[Q]{question}[A]{answer}"},
    {"name": "single-math-v1", "type": "single", "system_prompt": "SYS-MATH", "output_format": "[[rating]]",
     "prompt_template": "[Q]{question}[R]{ref_answer_1}[A]{answer}"},
    {"name": "single-v1-multi-turn", "type": "single", "system_prompt": "SYS-MT", "output_format": "[[rating]]",
     "prompt_template": MULTI_MARK + "[Q1]{question_1}[A1]{answer_1}[Q2]{question_2}[A2]{answer_2}"},
    {"name": "single-math-v1-multi-turn", "type": "single", "system_prompt": "SYS-MATH-MT",
     "output_format": "[[rating]]",
     "prompt_template": MULTI_MARK + "[R1]{ref_answer_1}[R2]{ref_answer_2}[Q1]{question_1}[A1]{answer_1}"
                        "[Q2]{question_2}[A2]{answer_2}"},
    {"name": "pair-v2", "type": "pairwise", "system_prompt": "P", "output_format": "[[A]]",
     "prompt_template": "{question}{answer_a}{answer_b}"},
]
QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["write-1", "write-2"]},
    {"question_id": 111, "category": "math", "turns": ["math-1", "math-2"]},
]
REFERENCES = {111: ["ref-1", "ref-2"]}
MODELS = ["alpha", "beta"]

# The stub's verdict for (model, question, turn); beta's second turn of 81 is malformed.
VERDICTS = {
    ("alpha", 81, 1): "Fine. Rating: [[8]]", ("alpha", 81, 2): "Rating: [[7]]",
    ("alpha", 111, 1): "Wrong. [[3]]", ("alpha", 111, 2): "Rating: [6]",
    ("beta", 81, 1): "Rating: [[9.5]]", ("beta", 81, 2): "I cannot rate this.",
    ("beta", 111, 1): "[[10]]", ("beta", 111, 2): "[[4]]",
}

def answer_text(model, qid, turn):
    return f"{model}-answer-{qid}-{turn}"


def answer_line(model, qid, turns):
    return {"question_id": qid, "answer_id": f"{model}{qid}", "model_id": model,
            "choices": [{"index": 0, "turns": turns}], "tstamp": 1.0}


def write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def bench(tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "mt_bench" / "question.jsonl", QUESTIONS)
    write_jsonl(data / "judge_prompts.jsonl", PROMPTS)
    for model in MODELS:
        write_jsonl(data / "mt_bench" / "model_answer" / f"{model}.jsonl",
                    [answer_line(model, q["question_id"], [answer_text(model, q["question_id"], t) for t in (1, 2)])
                     for q in QUESTIONS])
    write_jsonl(data / "mt_bench" / "reference_answer" / f"{JUDGE}.jsonl",
                [answer_line(JUDGE, qid, turns) for qid, turns in REFERENCES.items()])
    return data


def key_of_prompt(prompt):
    """(model, question, turn) of a request, read back from the answer texts in its user prompt."""
    turn = 2 if MULTI_MARK in prompt else 1
    for model in MODELS:
        for q in QUESTIONS:
            if answer_text(model, q["question_id"], turn) in prompt:
                return (model, q["question_id"], turn)
    raise AssertionError(f"unexpected prompt {prompt!r}")


class StubJudge:
    """An OpenAI chat-completions stub: the first ``transient`` requests get HTTP 500, requests after
    ``fail_after`` successes get HTTP 400; the rest get the fixed verdict of their match."""

    def __init__(self, transient=0, fail_after=None, verdict=lambda prompt: VERDICTS[key_of_prompt(prompt)]):
        self.transient, self.fail_after, self.verdict = transient, fail_after, verdict
        self.requests, self.successes, self.lock = [], 0, threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                    if len(stub.requests) <= stub.transient:
                        status, reply = 500, {"error": "overloaded"}
                    elif stub.fail_after is not None and stub.successes >= stub.fail_after:
                        status, reply = 400, {"error": "quota exceeded"}
                    else:
                        stub.successes += 1
                        text = stub.verdict(body["messages"][1]["content"])
                        status, reply = 200, {"choices": [{"index": 0, "message": {"role": "assistant",
                                                                                   "content": text}}]}
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def judge_args(data, url, *extra):
    return ["--data-dir", str(data), "--judge-model", JUDGE, "--openai-api-base", url, "--retry-backoff", "0.01",
            "--max-retries", "3", "--request-timeout", "10", *extra]


def judgments_of(data):
    return read_jsonl(data / "mt_bench" / "model_judgment" / f"{JUDGE}_single.jsonl")
