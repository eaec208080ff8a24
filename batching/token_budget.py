"""Token-budget micro-batches: sort by length, cut where padding would grow."""

from __future__ import annotations


def split_by_token_budget(
    lengths: list[int], max_batch_tokens: int, max_items: int | None = None
) -> list[list[int]]:
    """Group item indices into micro-batches.

    Items are sorted by length so each micro-batch holds similar lengths; a
    micro-batch is closed when its padded size (items x longest item) would
    exceed `max_batch_tokens` or it holds `max_items`. An item longer than the
    budget gets a micro-batch of its own.

    Args:
        lengths: token length of each item.
        max_batch_tokens: padded tokens allowed per micro-batch (> 0).
        max_items: optional cap on items per micro-batch.

    Returns:
        Lists of indices into `lengths`; every index appears exactly once.

    Raises:
        ValueError: `max_batch_tokens` or `max_items` below 1.
    """
    if max_batch_tokens <= 0:
        raise ValueError("max_batch_tokens must be positive")
    if max_items is not None and max_items < 1:
        raise ValueError("max_items must be at least 1 (or None for no cap)")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max(lengths[i], 1)  # sorted: the newcomer is the longest
        full = max_items is not None and len(current) >= max_items
        if current and (full or (len(current) + 1) * longest > max_batch_tokens):
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups
