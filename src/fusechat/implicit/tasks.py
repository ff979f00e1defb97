"""Prompts with verifiable answers for the offline demonstration: arithmetic word problems (a gold
number) and small Python functions (gold tests), each with a gold reply, generated from a seed.

The reward is then real without a reward model: the math and code verifiers decide it. Every
``heldout_every``-th prompt is held out (a fixed split, whatever the seed).
"""

from __future__ import annotations

import random

NAMES = ("Tom", "Ana", "Li", "Sara", "Omar", "Mia", "Ben", "Zoe")
THINGS = ("apples", "books", "coins", "stickers", "pencils", "marbles", "cards", "shells")
ASK_MATH = " Give the final number at the end of your answer."
ASK_CODE = " Put the code in a ```python block."


def word_problem(rng: random.Random) -> tuple[str, str, str]:
    """(question, gold reply, gold answer) of a one- or two-step problem."""
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b, c = rng.randint(2, 20), rng.randint(2, 12), rng.randint(2, 5)
    kind = rng.choice(("add", "sub", "mul", "add_mul"))
    if kind == "add":
        q = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?"
        r, x = f"{name} has {a} + {b} = {a + b} {thing}.", a + b
    elif kind == "sub":
        a += b
        q = f"{name} has {a} {thing} and gives away {b}. How many {thing} are left?"
        r, x = f"{name} has {a} - {b} = {a - b} {thing} left.", a - b
    elif kind == "mul":
        q = f"{name} has {c} boxes with {b} {thing} in each box. How many {thing} are there in total?"
        r, x = f"There are {c} x {b} = {c * b} {thing}.", c * b
    else:
        q = (f"{name} has {a} {thing}, then buys {c} packs of {b} {thing}. How many {thing} does {name} have "
             "now?")
        r, x = f"The packs hold {c} x {b} = {c * b} {thing}, so {name} has {a} + {c * b} = {a + c * b}.", a + c * b
    return q + ASK_MATH, f"{r} The answer is {x}.", str(x)


# (description with {k}, function name, body with {k}, test input -> expected(k, input))
CODE_TASKS = (
    ("returns its argument plus {k}", "add_{k}", "return x + {k}", lambda k: [(3, 3 + k), (-1, k - 1)]),
    ("returns its argument times {k}", "times_{k}", "return x * {k}", lambda k: [(3, 3 * k), (0, 0)]),
    ("returns True when its argument is divisible by {k}, else False", "divisible_by_{k}", "return x % {k} == 0",
     lambda k: [(k * 3, True), (k * 3 + 1, False)]),
    ("returns the larger of its argument and {k}", "max_with_{k}", "return max(x, {k})",
     lambda k: [(k + 4, k + 4), (k - 4, k)]),
    ("returns its argument minus {k}", "minus_{k}", "return x - {k}", lambda k: [(10, 10 - k), (k, 0)]),
)


def code_task(rng: random.Random) -> tuple[str, str, str]:
    """(question, gold reply, tests) for a one-line function of one argument ``x``."""
    describe, name, body, cases = rng.choice(CODE_TASKS)
    k = rng.randint(2, 9)
    name, body = name.format(k=k), body.format(k=k)
    question = f"Write a Python function `{name}(x)` that {describe.format(k=k)}." + ASK_CODE
    reply = f"```python\ndef {name}(x):\n    {body}\n```"
    tests = "\n".join(f"assert {name}({arg!r}) == {want!r}" for arg, want in cases(k))
    return question, reply, tests


def make_tasks(n_math: int, n_code: int, seed: int = 0) -> tuple[list[dict], dict[str, str]]:
    """``(prompts, gold replies by prompt_id)`` in the prompts.jsonl format; math and code interleaved."""
    rng = random.Random(seed)
    prompts, gold = [], {}
    kinds = ["math"] * n_math + ["code"] * n_code
    random.Random(seed + 1).shuffle(kinds)
    for i, kind in enumerate(kinds):
        pid = f"{kind}-{i:03d}"
        if kind == "math":
            question, reply, answer = word_problem(rng)
            reference = {"answer": answer}
        else:
            question, reply, tests = code_task(rng)
            reference = {"tests": tests, "entry_point": None}
        prompts.append({"prompt_id": pid, "domain": kind, "dataset": f"generated-{kind}",
                        "messages": [{"role": "user", "content": question}], "reference": reference})
        gold[pid] = reply
    return prompts, gold


def heldout_split(prompts: list[dict], every: int = 5) -> tuple[list[dict], list[dict]]:
    """(train, held out): every ``every``-th prompt is held out."""
    return ([p for i, p in enumerate(prompts) if i % every != every - 1],
            [p for i, p in enumerate(prompts) if i % every == every - 1])
