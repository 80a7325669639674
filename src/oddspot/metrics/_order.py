"""Item keys that put per-item rows in one canonical order, so merged states compute bit-identical results.

A state that keeps one row per item (per-image metrics, image scores) averages or resamples those
rows in order, and floating-point sums depend on order. Every row therefore carries a key (an int
such as the item's index in the dataset, or a str such as its path; by default its insertion index)
and results are computed over the rows sorted by key. Merged states hold the union of the rows, so
any partition merged in any order sorts into the same order as one process that saw every item.
"""

from __future__ import annotations

from collections.abc import Sequence

from oddspot.errors import OddspotError

Key = int | str


def item_key(key: object, default: int, where: str) -> Key:
    """`key` checked (an int or a str), or `default` (the insertion index) when it is None."""
    if key is None:
        return default
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise OddspotError(f"{where}: key must be an int or a str (the item's index or path), got {key!r:.40}")
    return key


def canonical_order(keys: Sequence[Key]) -> list[int]:
    """Indices of `keys` in canonical order: ints ascending, then strs ascending."""
    return sorted(range(len(keys)), key=lambda i: (isinstance(keys[i], str), keys[i]))


def check_disjoint(mine: Sequence[Key], theirs: Sequence[Key], where: str) -> None:
    """A one-line error when two states to be merged hold an item with the same key."""
    common = set(mine).intersection(theirs)
    if common:
        raise OddspotError(f"{where}: both states hold an item with key {min(common, key=str)!r:.60}; give every item "
                           "its own key (key=its index or path) before merging")
