"""Print MT-Bench mean scores per model, turn and category (and plot them).

    python FuseChat/eval/show_result.py --judge-model gpt-4-0125-preview --plot-file mt_bench.png

Run with --help for every flag; the work is done by fusechat.eval.
"""

if __name__ == "__main__": from fusechat.eval.cli import show_result; raise SystemExit(show_result())
