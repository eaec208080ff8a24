"""Token-budget micro-batches, checked as properties over many random inputs."""

from __future__ import annotations

import itertools
import random

import pytest

from batching.token_budget import split_by_token_budget


def padded(lengths: list[int], group: list[int]) -> int:
    return len(group) * max(max(lengths[i] for i in group), 1)


def random_cases(count: int = 500):
    rng = random.Random(1234)
    for _ in range(count):
        n = rng.randint(0, 60)
        lengths = [
            rng.choice((0, 1, rng.randint(1, 40), rng.randint(1, 600)))
            for _ in range(n)
        ]
        yield lengths, rng.randint(1, 800), rng.choice((None, 1, 3, 16))


def check(lengths: list[int], budget: int, max_items: int | None) -> None:
    groups = split_by_token_budget(lengths, budget, max_items)

    flat = [i for g in groups for i in g]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(groups)
    for group in groups:
        assert len(group) == 1 or padded(lengths, group) <= budget
        if max_items is not None:
            assert len(group) <= max_items
    # Sorted: within a group and from one group to the next.
    ordered = [lengths[i] for i in flat]
    assert ordered == sorted(ordered)
    # Greedy: the next item would not have fit in the group before it.
    for before, after in itertools.pairwise(groups):
        full = max_items is not None and len(before) >= max_items
        assert full or padded(lengths, [*before, after[0]]) > budget


def test_micro_batches_respect_the_budget_and_cover_every_item():
    for lengths, budget, max_items in random_cases():
        try:
            check(lengths, budget, max_items)
        except AssertionError as exc:
            raise AssertionError(f"{lengths=} {budget=} {max_items=}") from exc


def test_items_longer_than_the_budget_get_their_own_micro_batch():
    lengths = [5, 500, 5, 700, 5]

    groups = split_by_token_budget(lengths, max_batch_tokens=100)

    assert groups == [[0, 2, 4], [1], [3]]


def test_short_items_share_a_batch_up_to_the_budget():
    assert split_by_token_budget([10] * 10, max_batch_tokens=40) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
    ]
    assert split_by_token_budget([], max_batch_tokens=40) == []


@pytest.mark.parametrize(
    ("budget", "max_items"), [(0, None), (-5, None), (10, 0)], ids=str
)
def test_invalid_limits_are_rejected(budget, max_items):
    with pytest.raises(ValueError):
        split_by_token_budget([1, 2], budget, max_items)
