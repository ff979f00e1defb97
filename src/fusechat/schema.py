"""Column names and checks of the datasets that flow between stages (docs/design.md 4-7).

Every set is a ``datasets.DatasetDict`` with a ``train`` split, saved with ``save_to_disk``.
Rows hold real tokens only (no padding); row r of every model's set is the same conversation,
which the ``id`` column lets later stages verify.

tokenized set       id, input_ids, labels, attention_mask
representation set  + per_step_logits [T][k] (float16), per_step_indices [T][k] (uint16 when the
                        vocabulary fits in 65536 ids, else int32: the largest column, halved),
                      metric_ce (float16), per_step_metric_ce [T-1] (float16, optional)
aligned set         pivot's representation columns (per_step_metric_ce dropped)
                      + fused_per_step_logits, fused_per_step_indices ([T][<=k], the source's
                        distribution in the pivot's vocabulary; an empty list at t is EMPTY)
                      + fused_metric_ce (sequence level) or per_step_fused_metric_ce (token level)
"""

from __future__ import annotations

from collections.abc import Sequence

from .arrow import arrow_column, first_differing_row
from .errors import InputError

SPLIT = "train"
ID = "id"
TOKEN_COLUMNS = ("input_ids", "labels", "attention_mask")
TOKENIZED_COLUMNS = (ID, *TOKEN_COLUMNS)
LOGITS, INDICES, METRIC_CE, PER_STEP_METRIC_CE = (
    "per_step_logits", "per_step_indices", "metric_ce", "per_step_metric_ce")
REPRESENTATION_COLUMNS = (LOGITS, INDICES, METRIC_CE)
FUSED_LOGITS, FUSED_INDICES, FUSED_METRIC_CE, PER_STEP_FUSED_METRIC_CE = (
    "fused_per_step_logits", "fused_per_step_indices", "fused_metric_ce", "per_step_fused_metric_ce")
FUSED_COLUMNS = (FUSED_LOGITS, FUSED_INDICES, FUSED_METRIC_CE)
IGNORE_INDEX = -100
BLENDING = "blending_"  # prefix of the source's columns in a paired set


def index_dtype_for(vocab_size: int) -> str:
    """The narrowest Arrow integer type that holds every vocabulary id."""
    return "uint16" if vocab_size <= 1 << 16 else "int32"


def representation_features(per_token_metric: bool = False, index_dtype: str = "int32"):
    """The ``datasets.Features`` of a representation set (compact dtypes: float16 logits, narrow ids)."""
    from datasets import Features, List, Value

    features = {
        ID: Value("string"),
        "input_ids": List(Value("int32")),
        "labels": List(Value("int32")),
        "attention_mask": List(Value("int8")),
        LOGITS: List(List(Value("float16"))),
        INDICES: List(List(Value(index_dtype))),
        METRIC_CE: Value("float16"),  # computed and stored in float16, as the released code
    }
    if per_token_metric:
        features[PER_STEP_METRIC_CE] = List(Value("float16"))
    return Features(features)


def tokenized_features():
    from datasets import Features, List, Value

    return Features({
        ID: Value("string"),
        "input_ids": List(Value("int32")),
        "labels": List(Value("int32")),
        "attention_mask": List(Value("int8")),
    })


def train_split(dataset_dict, where: str):
    """The ``train`` split of a loaded DatasetDict (or the Dataset itself)."""
    from datasets import Dataset

    if isinstance(dataset_dict, Dataset):
        return dataset_dict
    if SPLIT not in dataset_dict:
        raise InputError(f"{where}: no '{SPLIT}' split (found {list(dataset_dict)})")
    return dataset_dict[SPLIT]


def require_columns(dataset, columns, where: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise InputError(f"{where}: missing column(s) {missing}; found {dataset.column_names}")


def check_same_conversations(left, right, left_name: str, right_name: str, compare_input_ids: bool = False) -> None:
    """Both sets hold the same conversations in the same order (row counts, ids, optionally input_ids)."""
    if len(left) != len(right):
        raise InputError(f"{left_name} has {len(left)} rows but {right_name} has {len(right)}")
    if ID in left.column_names and ID in right.column_names:
        row = first_differing_row(arrow_column(left, ID), arrow_column(right, ID))
        if row is not None:
            raise InputError(f"row {row}: conversation id {left[row][ID]!r} in {left_name} but "
                             f"{right[row][ID]!r} in {right_name}")
    if compare_input_ids:
        row = first_differing_row(arrow_column(left, "input_ids"), arrow_column(right, "input_ids"))
        if row is not None:
            rid = left[row][ID] if ID in left.column_names else row
            raise InputError(
                f"row {row} (id {rid!r}): input_ids differ between {left_name} and {right_name}; sets of a "
                "shared vocabulary tokenize alike (a different vocabulary needs align_token_and_vocab)")


def paired(base, blending, base_name: str, blending_name: str, blending_columns: Sequence[str]):
    """The base set with the blending set's ``blending_columns`` added under the ``blending_`` prefix."""
    from datasets import concatenate_datasets

    check_same_conversations(base, blending, base_name, blending_name)
    renamed = blending.select_columns(list(blending_columns)).rename_columns(
        {c: BLENDING + c for c in blending_columns})
    return concatenate_datasets([base, renamed], axis=1)


def metric_array(column, name: str, where: str):
    """A metric column (an Arrow array) as float64 numbers: NaN marks a failed row (filter_nan and
    --fiter_nan drop those); a column of other types or an infinity is refused (the MinCE choice
    would be forced to that row's source)."""
    import numpy as np
    import pyarrow as pa

    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type) or pa.types.is_null(column.type)):
        raise InputError(f"{where}: {name} holds {column.type} values, not numbers")
    values = np.asarray(column.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)
    infinite = np.flatnonzero(np.isinf(values))
    if len(infinite):
        row = int(infinite[0])
        raise InputError(f"{where}: row {row}: {name} is {values[row]} ({len(infinite)} such rows); a metric is a "
                         "finite cross-entropy")
    return values
