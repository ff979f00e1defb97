"""Literal pure-Python transcription of docs/design.md 6.1, the oracle for the token alignment kernel.

Deliberately slow and plain: nested loops, a textbook Levenshtein, the full DTW table. Shared by
the tests and benchmarks/bench_token_alignment.py.
"""

INF = float("inf")


def levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(
                previous[j] + 1,  # delete char_a
                current[j - 1] + 1,  # insert char_b
                previous[j - 1] + (char_a != char_b),  # substitute
            ))
        previous = current
    return previous[-1]


def literal_cost(a: str, b: str, base_marker: str, blending_marker: str) -> int:
    """Cost of blending token a against base token b."""
    stripped_a = a.replace(blending_marker, "")
    stripped_b = b.replace(base_marker, "")
    if stripped_a == "" or stripped_b == "":
        return levenshtein(a.replace(blending_marker, base_marker), b)
    return levenshtein(stripped_a, stripped_b)


def literal_cost_matrix(base_tokens, blending_tokens, base_marker, blending_marker):
    return [[literal_cost(a, b, base_marker, blending_marker) for b in base_tokens] for a in blending_tokens]


def literal_align_tokens(base_tokens, blending_tokens, base_marker, blending_marker):
    """For each base position j, the ascending list of blending positions matched to it."""
    n, m = len(blending_tokens), len(base_tokens)
    cost = literal_cost_matrix(base_tokens, blending_tokens, base_marker, blending_marker)

    def d_at(i, j):  # D with its boundary: row -1 and column -1 are +inf, D[-1][-1] = 0
        if i == -1 and j == -1:
            return 0
        if i == -1 or j == -1:
            return INF
        return d[i][j]

    d = [[None] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            d[i][j] = cost[i][j] + min(d_at(i - 1, j), d_at(i, j - 1), d_at(i - 1, j - 1))

    matched = [[] for _ in range(m)]
    i, j = n - 1, m - 1
    matched[j].append(i)
    while (i, j) != (0, 0):
        options = [(i - 1, j - 1), (i, j - 1), (i - 1, j)]  # diagonal, left, up
        values = [d[p][q] if p >= 0 and q >= 0 else INF for p, q in options]
        i, j = options[values.index(min(values))]  # the first minimum
        matched[j].append(i)
    return [sorted(rows) for rows in matched]
