"""docs/design.md 6.3 transcribed line by line: the oracle of the distribution alignment tests and benchmark."""


def oracle_align_distribution(align_type, base_ids, base_tokens, blending_ids, blending_tokens, alignment,
                              blending_logits, blending_indices, base_vocab, blending_pieces, base_marker,
                              blending_marker, blending_to_base=None, use_token_alignment_matrix=False):
    """base_vocab: piece -> base id; blending_pieces: piece of each blending id (None: no piece)."""
    next_base_ids = list(base_ids[1:]) + [base_ids[-1]]

    def exact(candidate):
        piece = blending_pieces[candidate] if 0 <= candidate < len(blending_pieces) else None
        return None if piece is None else base_vocab.get(piece.replace(blending_marker, base_marker))

    def candidates(j, how):
        logits, ids = [], []
        for logit, candidate in zip(blending_logits[j], blending_indices[j]):
            if not 0 <= candidate < len(blending_pieces):
                continue  # not a token of the blending vocabulary
            if how == "hard":
                base_id = exact(candidate)
                if base_id is None:
                    continue
            elif how == "soft":
                base_id = blending_to_base[candidate]
            else:
                base_id = exact(candidate)
                if base_id is None:
                    base_id = blending_to_base[candidate]
            if base_id not in ids:
                ids.append(base_id)
                logits.append(logit)
        return logits, ids

    out = []
    for i, matched in enumerate(alignment):
        one_hot = ([1.0], [next_base_ids[i]])
        if len(matched) == 1:
            j = matched[0]
            bt = base_tokens[i]
            blt = blending_tokens[j].replace(blending_marker, base_marker)
            if align_type == "hard":
                out.append(candidates(j, "hard") if bt == blt else one_hot)
            elif align_type == "soft":
                taken = bt == blt or base_ids[i] == blending_to_base[blending_ids[j]]
                out.append(candidates(j, "soft") if taken else one_hot)
            else:
                taken = blt.endswith(bt) or bt.endswith(blt)
                out.append(candidates(j, "default") if taken else one_hot)
        elif align_type == "default" and use_token_alignment_matrix:
            bt = base_tokens[i].replace(base_marker, "")
            tokens = [blending_tokens[j].replace(blending_marker, "") for j in matched]
            suffix_match = None
            if bt != "":  # "bt is not just the marker"
                for j, token in zip(matched, tokens):
                    if bt.endswith(token) or token.endswith(bt):
                        suffix_match = j
                        break
            if suffix_match is not None:
                out.append(candidates(suffix_match, "default"))
                continue
            consumed, rest = [], bt
            for k, token in enumerate(tokens):
                if rest.startswith(token):
                    consumed.append(k)
                    rest = rest[len(token):]
            succeeded = rest == ""
            if not succeeded:
                consumed = []
            everything = "".join(tokens)
            if succeeded or everything.endswith(bt) or bt.endswith(everything):
                kept = [matched[k] for k in consumed]
                kept_concatenation = "".join(blending_tokens[j].replace(blending_marker, "") for j in kept)
                if kept_concatenation == bt and kept:
                    out.append(candidates(kept[-1], "default"))
                else:
                    out.append(([], []))  # EMPTY (kept == [] is where the reference crashes)
            else:
                out.append(one_hot)
        else:
            out.append(one_hot)
    return [logits for logits, _ in out], [ids for _, ids in out]
