"""S4, supervised fine-tuning on TRL's SFTTrainer (docs/design.md 13.3, 13.6.1 #8).

``fusechat3`` mode: prompt and completion, the loss on the reply tokens only, no packing (FuseChat-3.0,
as Llama-Factory trains). ``wrpo`` mode: the whole conversation is the text, packed into fixed-length
blocks that cross row boundaries, so the loss covers prompt tokens too (as the released run_sft.py).
"""

from __future__ import annotations

MODES = ("fusechat3", "wrpo")


def sft_rows_as_dataset(rows: list[dict], mode: str):
    from datasets import Dataset

    if mode == "fusechat3":
        return Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
    return Dataset.from_list([{"messages": r["messages"]} for r in rows])


def sft_trainer(model, tokenizer, rows: list[dict], mode: str, settings, output_dir: str):
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(**settings.trainer_kwargs(output_dir), max_length=settings.max_length,
                       packing=mode == "wrpo", packing_strategy="wrapped", completion_only_loss=mode == "fusechat3",
                       dataset_num_proc=None)
    return SFTTrainer(model=model, args=config, train_dataset=sft_rows_as_dataset(rows, mode),
                      processing_class=tokenizer)
