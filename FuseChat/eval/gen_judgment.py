"""Judge MT-Bench answers with a GPT-4-class judge (single-answer grading).

    OPENAI_API_KEY=... python FuseChat/eval/gen_judgment.py --model-list FuseChat-7B --judge-model gpt-4-0125-preview --parallel 8

Run with --help for every flag; the work is done by fusechat.eval.
"""

if __name__ == "__main__": from fusechat.eval.cli import gen_judgment; raise SystemExit(gen_judgment())
