"""Renaming state-dict keys by ordered regular-expression rules (used by every converter).

A rule is ``(pattern, replacement)``: the pattern must match a key whole; the replacement is a
``re`` template (``r"res\\1.\\2"``) or a function of the match returning the new name, or None
to say "not mine after all" (the next rules are then tried).
"""
import re


def compile_rules(rules):
    """[(pattern str, replacement)] -> [(compiled pattern, replacement)]."""
    return [(re.compile(pattern), replacement) for pattern, replacement in rules]


def rename(key, rules):
    """The new name of ``key`` under the first rule that takes it, or None when no rule does."""
    for pattern, replacement in rules:
        match = pattern.fullmatch(key)
        if match is None:
            continue
        new = replacement(match) if callable(replacement) else match.expand(replacement)
        if new is not None:
            return new
    return None


def rename_state(state, rules, source):
    """Renames every key of ``state`` (name -> tensor). ``source`` names the input in errors.

    Raises KeyError listing the keys no rule takes, ValueError when two keys get one name."""
    out, unknown = {}, []
    for key, value in state.items():
        new = rename(key, rules)
        if new is None:
            unknown.append(key)
        elif new in out:
            raise ValueError(f"{source}: two keys convert to the same name {new!r} (one is {key!r})")
        else:
            out[new] = value
    if unknown:
        raise KeyError(
            f"{source}: {len(unknown)} keys of an unknown layout, e.g. {unknown[:5]}; "
            "is this a DETR checkpoint (official or HuggingFace DetrForSegmentation/DetrForObjectDetection)?"
        )
    return out


def strip_detr_prefix(state):
    """Drops the ``detr.`` prefix of the detector's keys (the segmentation models' wrapping) and
    BatchNorm's ``num_batches_tracked`` counters (bookkeeping, no weights)."""
    return {
        (k[len("detr.") :] if k.startswith("detr.") else k): v
        for k, v in state.items()
        if not k.endswith("num_batches_tracked")
    }
