"""train.py's flags: the published command line is accepted unchanged; bad values are clear errors."""

from __future__ import annotations

import json
import logging

import pytest

from train_flags import PUBLISHED, cpu_subset, flag_value

from fusechat.errors import InputError
from fusechat.training.arguments import make_parser, parse_args, translate_legacy_flags

def test_published_flags_are_rewritten_with_one_notice_each():
    out, notices = translate_legacy_flags(PUBLISHED)
    for old in ("--evaluation_strategy", "--warmup_ratio", "--fsdp_transformer_layer_cls_to_wrap",
                "--gradient_checkpointing"):
        assert old not in out
        assert sum(old in notice for notice in notices) == 1
    assert flag_value(out, "--eval_strategy") == "no"
    assert flag_value(out, "--warmup_steps") == "0.03"
    # Under FSDP the Trainer's checkpointing becomes FSDP's own (no redundant AllGather in backward).
    assert "--activation_checkpointing" not in out
    assert "full_shard auto_wrap" not in out and "--fsdp" in out
    assert json.loads(flag_value(out, "--fsdp_config")) == {
        "transformer_layer_cls_to_wrap": ["MistralDecoderLayer"], "reshard_after_forward": True,
        "activation_checkpointing": True}
    assert len(notices) == 5
    # Everything else is passed on untouched.
    assert flag_value(out, "--lm_loss_weight") == "0.9" and "--do_fuse" in out


@pytest.mark.parametrize("value,expected", [("True", True), ("False", None)])
def test_checkpointing_under_fsdp_is_fsdp_config_entry(value, expected):
    out, notices = translate_legacy_flags(["--fsdp", "--gradient_checkpointing", value])
    assert "--gradient_checkpointing" not in out and "--activation_checkpointing" not in out
    config = json.loads(flag_value(out, "--fsdp_config") or "{}")
    assert config.get("activation_checkpointing") is expected
    out, _ = translate_legacy_flags(["--fsdp", "false", "--gradient_checkpointing", "True"])  # FSDP off
    assert flag_value(out, "--activation_checkpointing") == "True" and "--fsdp_config" not in out


def test_the_parser_accepts_every_published_flag():
    out, _ = translate_legacy_flags(PUBLISHED)
    namespace = make_parser().parse_args(out)  # no __post_init__: --tf32 needs a GPU to be built
    assert namespace.eval_strategy == "no" and namespace.fsdp is True and namespace.tf32 is True
    assert namespace.bf16 is True and namespace.do_fuse is True and namespace.fuse_with_ref_model is True
    assert namespace.lm_loss_weight == 0.9 and namespace.fuse_loss_type == "ce" and namespace.lazy_preprocess


def test_cpu_subset_builds_the_arguments(tmp_path, caplog):
    argv = cpu_subset(PUBLISHED)
    argv[argv.index("--output_dir") + 1] = str(tmp_path)
    with caplog.at_level(logging.WARNING, logger="fusechat.training.arguments"):
        model_args, data_args, args = parse_args(argv)
    assert len([r for r in caplog.records if r.name == "fusechat.training.arguments"]) == 3
    assert model_args.model_name_or_path == "openchat/openchat_3.5" and data_args.data_path == "a,b"
    assert data_args.conv_temp == "openchat_3.5" and data_args.mask_instruction
    assert args.eval_strategy == "no" and args.activation_checkpointing and args.use_cpu
    assert args.get_warmup_steps(100) == 3  # ceil(0.03 * 100)
    assert args.do_fuse and args.lm_loss_weight == 0.9 and args.model_max_length == 2048
    assert args.remove_unused_columns is False and args.flash_attn_transformers


def test_fsdp_entries_merge_into_a_given_fsdp_config(tmp_path):
    out, _ = translate_legacy_flags(["--fsdp", "full_shard offload auto_wrap", "--fsdp_transformer_layer_cls_to_wrap",
                                     "A,B", "--fsdp_config", '{"version": 1, "cpu_offload": false}'])
    assert json.loads(flag_value(out, "--fsdp_config")) == {
        "version": 1, "cpu_offload": False, "transformer_layer_cls_to_wrap": ["A", "B"],
        "reshard_after_forward": "full_shard"}
    config_file = tmp_path / "fsdp.json"
    config_file.write_text('{"min_num_params": 0}')
    out, _ = translate_legacy_flags(["--fsdp_config", str(config_file), "--fsdp_transformer_layer_cls_to_wrap", "C"])
    assert json.loads(flag_value(out, "--fsdp_config")) == {"min_num_params": 0, "transformer_layer_cls_to_wrap": ["C"]}
    with pytest.raises(InputError, match="--fsdp_config file not found"):
        translate_legacy_flags(["--fsdp_config", str(tmp_path / "missing.json"), "--fsdp_transformer_layer_cls_to_wrap",
                                "C"])


def test_current_flags_pass_through_unchanged():
    argv = ["--eval_strategy", "steps", "--fsdp", "hybrid_shard auto_wrap", "--fsdp_config", "cfg.json",
            "--warmup_steps", "10", "--do_fuse", "--seed=3"]
    assert translate_legacy_flags(argv) == (argv, [])
    out, notices = translate_legacy_flags(["--evaluation_strategy=steps", "--overwrite_output_dir"])
    assert out == ["--eval_strategy=steps"] and len(notices) == 2


@pytest.mark.parametrize("extra, message", [
    (["--lm_loss_weight", "1.5"], "--lm_loss_weight must be in \\[0, 1\\]"),
    (["--lm_loss_weight", "-0.1"], "--lm_loss_weight must be in \\[0, 1\\]"),
    (["--fuse_loss_type", "mse"], "--fuse_loss_type must be one of ce, kl, got 'mse'"),
    (["--fuse_temperature", "0"], "--fuse_temperature must be positive"),
    (["--warmup_ratio", "1.5"], "--warmup_ratio must be in \\[0, 1\\)"),
    (["--train_baseline"], "exclude each other"),
])
def test_bad_flag_values_are_input_errors(tmp_path, extra, message):
    argv = ["--model_name_or_path", "m", "--data_path", "d", "--output_dir", str(tmp_path), "--use_cpu", "True",
            "--do_fuse", *extra]
    with pytest.raises(InputError, match=message):
        parse_args(argv)


def test_remove_unused_columns_stays_off(tmp_path, caplog):
    argv = ["--model_name_or_path", "m", "--data_path", "d", "--output_dir", str(tmp_path), "--use_cpu", "True",
            "--remove_unused_columns", "True"]
    with caplog.at_level(logging.WARNING, logger="fusechat.training.arguments"):
        _, _, args = parse_args(argv)
    assert args.remove_unused_columns is False
    assert any("--remove_unused_columns True ignored" in r.message for r in caplog.records)
