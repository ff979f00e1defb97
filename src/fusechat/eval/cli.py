"""Command lines of the evaluation scripts, with the flag names of FastChat's llm_judge scripts.

    python FuseChat/eval/gen_model_answer.py --model-path models/fused --model-id fused --conv-temp openchat_3.5
    python FuseChat/eval/gen_judgment.py --model-list fused --judge-model gpt-4-0125-preview --parallel 8
    python FuseChat/eval/show_result.py --judge-model gpt-4-0125-preview --plot-file mt_bench.png
    python FuseChat/eval/gen_alpaca_eval.py --model-path models/fused --model-id fused \
        --instruction-file data/alpaca_eval/alpaca_eval.json

Files live under ``--data-dir`` (default ``data``) in FastChat's layout (see ``questions.py``);
each path flag overrides one of them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import run_cli
from ..storage import check_output_file, sole_writer
from .questions import BenchPaths, check_model_id

DEFAULT_JUDGE = "gpt-4-0125-preview"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bench-name", default="mt_bench", help="benchmark folder under --data-dir")
    parser.add_argument("--data-dir", default="data", help="root of FastChat's llm_judge data layout")
    parser.add_argument("--question-file", help="default: {data-dir}/{bench-name}/question.jsonl")


def _generation(parser: argparse.ArgumentParser, max_new_token: int) -> None:
    parser.add_argument("--model-path", required=True, help="a causal LM folder (or hub id)")
    parser.add_argument("--model-id", required=True, help="the name the answers are filed under")
    parser.add_argument("--conv-temp", help="conversation template; default: the tokenizer's chat template")
    parser.add_argument("--separator", help="token that closes a turn in --conv-temp prompts; default: the "
                        "model's (its eos, or <|im_end|>/<|eot_id|>/<end_of_turn>/<sep> for InternLM2/Llama-3/"
                        "Gemma/Yuan)")
    parser.add_argument("--max-new-token", type=int, default=max_new_token)
    parser.add_argument("--batch-size", type=int, default=8, help="prompts generated together")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                        help="default: float16 on a GPU, float32 on the CPU")


def _paths(args) -> BenchPaths:
    return BenchPaths(Path(args.data_dir), args.bench_name)


def gen_model_answer(argv: list[str] | None = None) -> int:
    return run_cli(_gen_model_answer, argv, prog="gen_model_answer.py")


def _gen_model_answer(argv) -> None:
    from .generate import generate_mt_bench_answers

    parser = argparse.ArgumentParser(description="Generate MT-Bench answers in FastChat's model_answer format.")
    _common(parser)
    _generation(parser, max_new_token=1024)
    parser.add_argument("--answer-file", help="default: {data-dir}/{bench-name}/model_answer/{model-id}.jsonl")
    parser.add_argument("--question-begin", type=int, help="debug: first question index")
    parser.add_argument("--question-end", type=int, help="debug: end question index")
    parser.add_argument("--num-choices", type=int, default=1)
    parser.add_argument("--num-gpus-per-model", type=int, default=1)
    parser.add_argument("--num-gpus-total", type=int, default=1)
    args = parser.parse_args(argv)
    check_model_id(args.model_id)
    paths = _paths(args)
    answer_file = args.answer_file or paths.answer_file(args.model_id)
    question_file = args.question_file or paths.question_file
    check_output_file(answer_file, "--answer-file", [question_file, args.model_path])
    with sole_writer(answer_file, "--answer-file"):
        count = generate_mt_bench_answers(
            args.model_path, args.model_id, question_file, answer_file, conv_temp=args.conv_temp,
            separator=args.separator, max_new_token=args.max_new_token, num_choices=args.num_choices,
            num_gpus_per_model=args.num_gpus_per_model, num_gpus_total=args.num_gpus_total, dtype=args.dtype,
            batch_size=args.batch_size, question_begin=args.question_begin, question_end=args.question_end)
    print(f"answered {count} question(s); answers in {answer_file}")


def gen_judgment(argv: list[str] | None = None) -> int:
    return run_cli(_gen_judgment, argv, prog="gen_judgment.py")


def _gen_judgment(argv) -> None:
    from . import judge as judging

    parser = argparse.ArgumentParser(description="Single-answer grading of MT-Bench answers by an LLM judge.")
    _common(parser)
    parser.add_argument("--judge-file", help="default: {data-dir}/judge_prompts.jsonl")
    parser.add_argument("--judge-model", default=DEFAULT_JUDGE)
    parser.add_argument("--mode", default="single", choices=["single"], help="only single-answer grading")
    parser.add_argument("--model-list", nargs="+", help="model ids to judge; default: every answer file")
    parser.add_argument("--parallel", type=int, default=1, help="concurrent judge requests")
    parser.add_argument("--first-n", type=int, help="debug: judge only the first n questions")
    parser.add_argument("--answer-dir", help="default: {data-dir}/{bench-name}/model_answer")
    parser.add_argument("--ref-answer-dir", help="default: {data-dir}/{bench-name}/reference_answer")
    parser.add_argument("--output-file", help="default: {data-dir}/{bench-name}/model_judgment/{judge}_single.jsonl")
    parser.add_argument("--judge-prompt", default=judging.DEFAULT_PROMPT,
                        help="prompt for general questions; its multi-turn form is NAME-multi-turn")
    parser.add_argument("--judge-prompt-ref", default=judging.DEFAULT_REF_PROMPT,
                        help="prompt for math/reasoning/coding (with reference answers)")
    parser.add_argument("--openai-api-base", help="default: $OPENAI_BASE_URL, else " + judging.DEFAULT_API_BASE)
    parser.add_argument("--openai-api-key", help="default: $OPENAI_API_KEY")
    parser.add_argument("--max-tokens", type=int, default=2048, help="judge reply length")
    parser.add_argument("--max-retries", type=int, default=8)
    parser.add_argument("--retry-backoff", type=float, default=1.0, help="first retry delay in seconds; doubles")
    parser.add_argument("--request-timeout", type=float, default=120.0,
                        help="seconds per request; a judge that never answers costs up to (max-retries + 1) x "
                             "request-timeout plus the backoff, about 21 minutes per request with the defaults")
    parser.add_argument("--rejudge-missing", action="store_true",
                        help="judge again the verdicts of the output file that have no rating (score -1)")
    args = parser.parse_args(argv)
    paths = _paths(args)
    output_file = args.output_file or paths.judgment_file(args.judge_model)
    question_file = args.question_file or paths.question_file
    answer_dir = args.answer_dir or paths.answer_dir
    check_output_file(output_file, "--output-file", [question_file, args.judge_file or paths.judge_prompt_file,
                                                     answer_dir, args.ref_answer_dir or paths.reference_dir])
    with sole_writer(output_file, "--output-file"):
        _judge(args, paths, question_file, answer_dir, output_file)


def _judge(args, paths: BenchPaths, question_file, answer_dir, output_file) -> None:
    from . import judge as judging
    from .questions import load_answer_dir, load_questions

    questions = load_questions(question_file)
    if args.first_n:
        questions = questions[: args.first_n]
    answers = load_answer_dir(answer_dir, args.model_list)
    references = judging.load_reference_answers(args.ref_answer_dir or paths.reference_dir, args.judge_model,
                                                questions)
    prompts = judging.load_judge_prompts(args.judge_file or paths.judge_prompt_file)
    judges = judging.make_single_judges(args.judge_model, prompts, args.judge_prompt, args.judge_prompt_ref)
    matches = judging.make_single_matches(questions, answers, judges, references)
    client = judging.client_from_settings(args.openai_api_base, args.openai_api_key, timeout=args.request_timeout,
                                          max_retries=args.max_retries, backoff=args.retry_backoff)
    print(json.dumps({"bench_name": args.bench_name, "mode": args.mode, "judge": args.judge_model,
                      "model_list": list(answers), "total_num_questions": len(questions),
                      "total_num_matches": len(matches), "output_path": str(output_file)}, indent=4))
    summary = judging.run_judging(matches, client, output_file, parallel=args.parallel, max_tokens=args.max_tokens,
                                  rejudge_missing=args.rejudge_missing)
    print(f"judged {summary.judged}, skipped {summary.skipped} already judged, "
          f"{summary.malformed} verdict(s) without a rating in [1, 10] (score -1); judgments in {output_file}")


def show_result(argv: list[str] | None = None) -> int:
    return run_cli(_show_result, argv, prog="show_result.py")


def _show_result(argv) -> None:
    from ..storage import write_json
    from .questions import load_questions
    from .results import format_tables, load_judgments, plot_category_scores, score_tables

    parser = argparse.ArgumentParser(description="Mean MT-Bench scores per model, turn and category.")
    _common(parser)
    parser.add_argument("--input-file", help="default: {data-dir}/{bench-name}/model_judgment/{judge}_single.jsonl")
    parser.add_argument("--judge-model", default=DEFAULT_JUDGE)
    parser.add_argument("--mode", default="single", choices=["single"])
    parser.add_argument("--model-list", nargs="+")
    parser.add_argument("--plot-file", help="write a per-category bar chart (PNG)")
    parser.add_argument("--output-json", help="write the tables as JSON")
    args = parser.parse_args(argv)
    paths = _paths(args)
    input_file = args.input_file or paths.judgment_file(args.judge_model)
    question_file = Path(args.question_file or paths.question_file)
    for flag in ("output_json", "plot_file"):
        if getattr(args, flag):
            check_output_file(getattr(args, flag), "--" + flag.replace("_", "-"), [input_file, question_file])
    categories = None
    if args.question_file or question_file.is_file():
        categories = {q["question_id"]: q["category"] for q in load_questions(question_file)}
    print(f"Mode: {args.mode}\nInput file: {input_file}")
    tables = score_tables(load_judgments(input_file), categories, args.model_list)
    print(format_tables(tables, args.bench_name))
    if categories is None:
        print(f"(no per-category table: question file {question_file} not found)")
    if args.output_json:
        write_json(args.output_json, tables.as_dict())
    if args.plot_file:
        plot_category_scores(tables, args.plot_file)
        print(f"plot written to {args.plot_file}")


def gen_alpaca_eval(argv: list[str] | None = None) -> int:
    return run_cli(_gen_alpaca_eval, argv, prog="gen_alpaca_eval.py")


def _gen_alpaca_eval(argv) -> None:
    from .alpaca_eval import generate_alpaca_outputs, load_instructions
    from .generate import load_generator

    parser = argparse.ArgumentParser(description="Generate AlpacaEval 2.0 outputs in alpaca_eval's JSON shape.")
    _generation(parser, max_new_token=2048)
    parser.add_argument("--instruction-file", default="data/alpaca_eval/alpaca_eval.json",
                        help="alpaca_eval's evaluation set (JSON list or JSON lines with 'instruction')")
    parser.add_argument("--output-file", help="default: data/alpaca_eval/model_outputs/{model-id}.json")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    check_model_id(args.model_id)
    output_file = args.output_file or f"data/alpaca_eval/model_outputs/{args.model_id}.json"
    check_output_file(output_file, "--output-file", [args.instruction_file, args.model_path])
    with sole_writer(output_file, "--output-file"):
        instructions = load_instructions(args.instruction_file)
        outputs = generate_alpaca_outputs(
            lambda: load_generator(args.model_path, args.conv_temp, args.dtype, batch_size=args.batch_size,
                                   separator=args.separator),
            instructions, output_file, args.model_id, max_new_tokens=args.max_new_token,
            temperature=args.temperature, seed=args.seed)
    print(f"{len(outputs)} outputs in {output_file}")
