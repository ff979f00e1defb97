"""Evaluation of chat models (docs/design.md 10), FastChat-compatible.

- ``questions``: MT-Bench files in FastChat's llm_judge layout, category temperatures;
- ``generate``: prompt formats, batched generation, MT-Bench answers (resumable, multi-GPU);
- ``judge``: single-answer grading prompts, the OpenAI-compatible client, resumable judging;
- ``results``: mean scores per model, turn and category, tables and a PNG;
- ``alpaca_eval``: AlpacaEval 2.0 outputs;
- ``jsonl``: interruption-safe JSON-lines files; ``cli``: the scripts' command lines.
"""
