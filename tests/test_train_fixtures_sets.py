"""The training tests' fixture sets are what the training checks accept."""

from train_fixtures import aligned_rows, save_set

from fusechat import schema


def test_built_sets_pass_the_training_checks(openchat_tokenizer, tmp_path):
    """The fixture sets are what the checks accept: lengths agree, ids fit the vocabulary."""
    from fusechat.storage import load_dataset_dir
    from fusechat.training.datasets import SetRequirements, check_rows

    rows = aligned_rows(openchat_tokenizer, count=5)
    assert any(len(ids) == 0 for r in rows for ids in r[schema.FUSED_INDICES])
    assert any(len(ids) == 1 for r in rows for ids in r[schema.FUSED_INDICES])
    path = save_set(rows, tmp_path / "set")
    dataset = load_dataset_dir(path)["train"]
    assert dataset.features[schema.INDICES].feature.feature.dtype == "uint16"
    check_rows(dataset, str(path), SetRequirements(True, True, len(openchat_tokenizer), 512))
