"""Hand-made prompt, sample and score files for the implicit-fusion tests."""

import json
from pathlib import Path

SAMPLING = {"temperature": 0.8, "top_p": 0.95, "top_k": None, "repetition_penalty": None, "max_tokens": 16}


def prompt(pid, domain="if", text=None, reference=None):
    return {"prompt_id": pid, "domain": domain, "dataset": "hand-made",
            "messages": [{"role": "user", "content": text or f"question {pid}"}], "reference": reference}


def scored_row(pid, source, scores, verdicts=None, texts=None, finish=None, text=None):
    n = len(scores)
    return {"prompt_id": pid, "source": source,
            "responses": texts or [f"{source}-{pid}-{i}" for i in range(n)],
            "finish_reasons": finish or ["stop"] * n, "seeds": [13, 21, 42, 79, 100, 1, 2, 3][:n],
            "sampling": SAMPLING, "template": f"<user> {text or f'question {pid}'} <assistant>",
            "rm_scores": scores, "verdicts": verdicts or [None] * n}


def write_jsonl(path, rows):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
