"""Literal pure-Python transcriptions of docs/design.md 12.3-12.5, the oracles of the FuseLLM data stages.

Deliberately slow and plain (nested loops, dicts, the full DTW table), written from the text of the
specification. Shared by tests/test_fusellm_data.py and the FuseLLM benchmarks.
"""

from itertools import chain

from token_alignment_oracle import levenshtein

INF = float("inf")
ORDERS = {"diagonal-up-left": ((-1, -1), (-1, 0), (0, -1)), "diagonal-left-up": ((-1, -1), (0, -1), (-1, 0))}


# --- 12.3 --------------------------------------------------------------------------------------

def literal_mined_entry(query, base_pieces):
    """x' -> itself if a base piece, else the first base piece (list order) at the smallest distance."""
    if query in base_pieces:
        return query
    best, best_piece = INF, None
    for piece in base_pieces:
        distance = levenshtein(query, piece)
        if distance < best:
            best, best_piece = distance, piece
    return best_piece


# --- 12.4.1 ------------------------------------------------------------------------------------

def literal_fusellm_align(base_pieces, blending_pieces, base_marker, blending_marker, order="diagonal-up-left"):
    """For each base position, the ascending blending positions matched to it (DTW on pieces)."""
    n, m = len(blending_pieces), len(base_pieces)
    cost = [[levenshtein(a.replace(blending_marker, ""), b.replace(base_marker, "")) for b in base_pieces]
            for a in blending_pieces]

    def at(i, j):
        if i == -1 and j == -1:
            return 0
        if i < 0 or j < 0:
            return INF
        return d[i][j]

    d = [[0] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            d[i][j] = cost[i][j] + min(at(i - 1, j), at(i, j - 1), at(i - 1, j - 1))
    matched = [[] for _ in range(m)]
    i, j = n - 1, m - 1
    while (i, j) != (0, 0):
        matched[j].append(i)
        options = [(i + di, j + dj) for di, dj in ORDERS[order]]
        values = [at(p, q) if p >= 0 and q >= 0 else INF for p, q in options]
        i, j = options[values.index(min(values))]
    matched[0].append(0)
    return [sorted(positions) for positions in matched]


# --- 12.4.2 ------------------------------------------------------------------------------------

def literal_distributions(base_ids, blending_ids, blending_logits, blending_indices, base_vocab, blending_vocab,
                          base_marker, blending_marker, align_type, mapping=None, onehot_next=False):
    """Per base position (logits, ids), plus the count of skipped candidates.

    base_vocab / blending_vocab: dict id -> piece (a missing id has no piece).
    """
    base_index = {}
    for base_id in sorted(base_vocab):
        base_index.setdefault(base_vocab[base_id], base_id)
    base_pieces = [base_vocab[t] for t in base_ids]
    blending_pieces = [blending_vocab[t] for t in blending_ids]
    alignment = literal_fusellm_align(base_pieces, blending_pieces, base_marker, blending_marker)
    out_logits, out_ids, skipped = [], [], 0
    for i, positions in enumerate(alignment):
        one_hot_id = base_ids[min(i + 1, len(base_ids) - 1)] if onehot_next else base_ids[i]
        result = ([1.0], [one_hot_id])
        if len(positions) == 1:
            j = positions[0]
            bt = base_pieces[i]
            blt = blending_pieces[j].replace(blending_marker, base_marker)
            if i == 0 and blending_marker == "Ġ" and bt.startswith(base_marker) and not blt.startswith(base_marker):
                blt = base_marker + blt
            if bt == blt or (align_type == "soft" and blt in mapping and mapping[blt] == bt):
                logits, ids = [], []
                for logit, candidate in zip(blending_logits[j], blending_indices[j]):
                    piece = blending_vocab.get(candidate)
                    if piece is None:
                        skipped += 1
                        continue
                    c = piece.replace(blending_marker, base_marker)
                    if align_type == "soft":
                        if c not in mapping:
                            skipped += 1
                            continue
                        c = mapping[c]
                    if c in base_index and base_index[c] not in ids:
                        logits.append(logit)
                        ids.append(base_index[c])
                result = (logits, ids)
        out_logits.append(result[0])
        out_ids.append(result[1])
    return out_logits, out_ids, skipped


# --- 12.5 --------------------------------------------------------------------------------------

def literal_pack(columns, block_size, num_workers, batch_size):
    """The reference's map over contiguous shards and batches, transcribed: columns -> packed rows."""
    rows = len(columns["input_ids"])
    shards = 1 if not num_workers or num_workers == 1 else min(num_workers, rows)
    bounds = []
    for s in range(shards):
        start = s * (rows // shards) + min(s, rows % shards)
        stop = start + rows // shards + (1 if s < rows % shards else 0)
        for b in range(start, stop, batch_size):
            bounds.append((b, min(b + batch_size, stop)))
    packed = {k: [] for k in columns}
    for start, stop in bounds:
        examples = {k: v[start:stop] for k, v in columns.items()}
        for k in examples:
            if "metric_ce" in k:
                examples[k] = [[x] * len(examples["input_ids"][i]) for i, x in enumerate(examples[k])]
        concatenated = {k: list(chain(*examples[k])) for k in examples}
        total = len(concatenated["input_ids"])
        result = {k: [t[i:i + block_size] for i in range(0, total, block_size)] for k, t in concatenated.items()}
        for k in result:
            if "metric_ce" in k:
                means = []
                for chunk in result[k]:
                    total_sum = 0.0
                    for value in chunk:  # left to right
                        total_sum += value
                    means.append(total_sum / len(chunk))
                result[k] = means
        for k in packed:
            packed[k].extend(result[k])
    return packed


def literal_cooccurrence(blending_pieces, base_pieces, blending_marker, base_marker, base_rows, blending_rows, window):
    """docs/design.md 12.3 ``co_occurrence`` steps 1-5 with dense count tables: (mapping, changes)."""
    keys = [p.replace(blending_marker, base_marker) for p in blending_pieces]
    mapping = {k: literal_mined_entry(k, base_pieces) for k in keys}
    minima = {}
    for k in keys:
        if k in base_pieces:
            minima[k] = [k]
        else:
            best = min(levenshtein(k, y) for y in base_pieces)
            minima[k] = [y for y in base_pieces if levenshtein(k, y) == best]

    def counts(rows, size):
        c = [[0] * size for _ in range(size)]
        for ids in rows:
            for i in range(len(ids)):
                for j in range(max(0, i - window), min(i + window, len(ids))):
                    if j != i:
                        c[ids[i]][ids[j]] += 1
                        c[ids[j]][ids[i]] += 1
        return c

    base_counts, blending_counts = counts(base_rows, len(base_pieces)), counts(blending_rows, len(blending_pieces))
    inverse = {}
    for k, v in mapping.items():
        inverse[v] = k
    anchors = [(base_pieces.index(c), blending_pieces.index(inverse[c].replace(base_marker, blending_marker)))
               for c in inverse if inverse[c].replace(base_marker, blending_marker) in blending_pieces]
    changes = {}
    updated = dict(mapping)
    for k, v in mapping.items():
        if k == v:
            continue
        if len(minima[k]) == 1:
            choice = minima[k][0]
        else:
            bl = k.replace(base_marker, blending_marker)
            b = [blending_counts[blending_pieces.index(bl)][col] if bl in blending_pieces else 0 for _, col in anchors]
            best, choice = None, None
            for y in minima[k]:
                a = [base_counts[base_pieces.index(y)][col] for col, _ in anchors]
                dot = sum(x * z for x, z in zip(a, b))
                sim = dot / ((sum(x * x for x in a) ** 0.5) * (sum(z * z for z in b) ** 0.5) + 1e-6)
                if best is None or sim > best:
                    best, choice = sim, y
        if choice != v:
            updated[k] = choice
            changes[k] = [v, choice]
    return updated, changes
