"""Generate AlpacaEval 2.0 outputs (alpaca_eval's JSON shape) with a local model.

    python FuseChat/eval/gen_alpaca_eval.py --model-path models/FuseChat-7B --model-id FuseChat-7B --conv-temp openchat_3.5 --instruction-file data/alpaca_eval/alpaca_eval.json

Run with --help for every flag; the work is done by fusechat.eval.
"""

if __name__ == "__main__": from fusechat.eval.cli import gen_alpaca_eval; raise SystemExit(gen_alpaca_eval())
