"""Shared by the alignment benchmarks: cut a real text to a given number of tokens."""


def prefix_with_tokens(tokenizer, text: str, size: int) -> str:
    """The shortest prefix of text whose encoding has at least ``size`` tokens (binary search)."""
    if len(tokenizer.encode(text)) < size:
        raise SystemExit(f"the benchmark text has fewer than {size} tokens")
    low, high = 1, len(text)
    while low < high:
        middle = (low + high) // 2
        if len(tokenizer.encode(text[:middle])) >= size:
            high = middle
        else:
            low = middle + 1
    return text[:low]
