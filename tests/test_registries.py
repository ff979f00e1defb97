"""Each registry takes one new entry and the public entry points use it (docs/extending.md): a
conversation template, a model family, a merge method. Every test removes its entry again."""

import json
import shutil

import pytest
import torch
import yaml
from datasets import load_from_disk
from merge_fixtures import perturbed_copy
from mergekit.merge_methods import BasePolicy, InputContract, TensorGroup, merge_method
from safetensors.torch import load_file
from transformers import AutoTokenizer

from fusechat import templates
from fusechat.cli.get_data_representation import main as get_data_representation
from fusechat.eval.generate import resolve_prompt_format
from fusechat.merge import cli as merge_cli
from fusechat.merge import registry
from fusechat.templates import EOS, ChatTemplate, ModelFamily, register_family, register_template

CONVERSATION = [{"id": "r1", "conversations": [{"from": "human", "value": "Hi there"},
                                               {"from": "gpt", "value": "Hello"}]}]


@pytest.fixture
def registries():
    """Restore the template and family registries after a test."""
    saved_templates, saved_families = dict(templates.TEMPLATES), list(templates.FAMILIES)
    yield
    templates.TEMPLATES.clear()
    templates.TEMPLATES.update(saved_templates)
    templates.FAMILIES[:] = saved_families


def tokenize(tmp_path, model, conv_temp):
    """Run get_data_representation's tokenizing pass; return the one row of the tokenized set."""
    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps(CONVERSATION))
    get_data_representation(["--model_name_or_path", str(model), "--data_path", str(corpus),
                             "--tknz_dataset_path", str(tmp_path / "tk"), "--conv_temp", conv_temp,
                             "--mask_instruction", "--model_max_length", "64"])
    return load_from_disk(str(tmp_path / "tk"))["train"][0]


def labelled_text(tokenizer, row):
    return tokenizer.decode([label for label in row["labels"] if label != -100])


def test_a_new_template_is_one_entry(registries, tmp_path, pivot_path, openchat_tokenizer):
    register_template(ChatTemplate("toy-chat", "Q: ", "\n", "A:  ", EOS, after_assistant="\n\n",
                                   aliases=("toy",)))
    row = tokenize(tmp_path, pivot_path, "toy")
    # The pivot's eos <|end_of_turn|> closes the reply; the role markers are not labels, the spaces
    # after "A:" and the separator are.
    text = "Q: Hi there\nA:  Hello<|end_of_turn|>\n\n"
    assert row["input_ids"] == openchat_tokenizer(text)["input_ids"]
    assert labelled_text(openchat_tokenizer, row).strip() == "Hello<|end_of_turn|>"
    assert openchat_tokenizer.decode(row["input_ids"][:1]) == "<s>"


def test_a_new_family_is_one_entry(registries, tmp_path, pivot_path, openchat_tokenizer):
    # The tiny pivot's config says MistralForCausalLM; this family closes its turns with </s>.
    register_family(ModelFamily("toy-mistral", lambda names, vocab: "mistralforcausallm" in names,
                                separator="</s>", template="openchat_3.5"))
    row = tokenize(tmp_path, pivot_path, "openchat_3.5")
    text = "GPT4 Correct User: Hi there</s>GPT4 Correct Assistant: Hello</s>"
    assert row["input_ids"] == openchat_tokenizer(text)["input_ids"]
    assert labelled_text(openchat_tokenizer, row).strip() == "Hello</s>"


def test_a_family_template_serves_a_tokenizer_without_one(registries, tmp_path, pivot_path, openchat_tokenizer):
    register_family(ModelFamily("toy-mistral", lambda names, vocab: "mistralforcausallm" in names,
                                template="mistral"))
    bare = tmp_path / "bare"
    shutil.copytree(pivot_path, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = AutoTokenizer.from_pretrained(str(bare))
    assert not tokenizer.chat_template
    prompt = resolve_prompt_format(tokenizer, None, str(bare))
    assert prompt.name == "mistral"
    assert prompt.prompt_ids([("user", "Hi")]) == openchat_tokenizer("[INST] Hi [/INST]")["input_ids"]


def test_a_family_names_a_known_template(registries):
    with pytest.raises(Exception, match="unknown conversation template 'nope'"):
        register_family(ModelFamily("bad", lambda names, vocab: False, template="nope"))


# ---- a merge method: the pivot plus a scaled sum of the targets' changes; its prepare hook sets the
# scale to 1 / (number of targets), so the merge is the targets' mean.

@merge_method(name="toy_mean_of_changes", contract=InputContract(base=BasePolicy.REQUIRED))
def toy_mean_of_changes(group: TensorGroup, scale: float = 1.0) -> torch.Tensor:
    base = group.base.tensor
    return base + scale * sum(entry.tensor - base for entry in group.non_base)


def one_over_targets(config, config_file, options):
    targets = [entry for entry in config.models if entry.model != config.base_model]
    config.parameters = dict(config.parameters or {}, scale=1.0 / len(targets))


@pytest.mark.slow
def test_a_new_merge_method_is_one_entry(tmp_path, pivot_path, capsys):
    entry = registry.register_merge_method(registry.MergeMethodEntry(toy_mean_of_changes, prepare=one_over_targets))
    try:
        targets = [perturbed_copy(pivot_path, tmp_path / f"t{i}", seed=i, scale=0.05) for i in range(3)]
        config = tmp_path / "toy.yml"
        config.write_text(yaml.safe_dump({
            "merge_method": entry.name, "base_model": str(pivot_path), "dtype": "float32",
            "models": [{"model": str(pivot_path)}] + [{"model": str(t)} for t in targets]}))
        assert merge_cli.cli([str(config), str(tmp_path / "merged")]) == 0
    finally:
        del registry.METHODS[entry.name]
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    states = [load_file(t / "model.safetensors") for t in targets]
    assert set(merged) == set(states[0])
    for name, tensor in merged.items():
        mean = sum(state[name].double() for state in states) / 3
        torch.testing.assert_close(tensor.double(), mean, rtol=0, atol=1e-6)
