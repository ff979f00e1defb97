"""Generate MT-Bench answers with a local model (FastChat llm_judge format).

    python FuseChat/eval/gen_model_answer.py --model-path models/FuseChat-7B --model-id FuseChat-7B --conv-temp openchat_3.5

Run with --help for every flag; the work is done by fusechat.eval.
"""

if __name__ == "__main__": from fusechat.eval.cli import gen_model_answer; raise SystemExit(gen_model_answer())
