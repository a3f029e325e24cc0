"""First-fit bin packing, shared by the SFT build (`marl.tiny.pack`) and the update's packed
forward (`marl.engine.local._packed_logits`). Pure Python, no torch."""
from __future__ import annotations


def first_fit(size: list[int], width: int) -> list[list[int]]:
    """Items (by index) into bins of `width`, first fit by decreasing size (ties: by index).
    Every item must fit (size <= width); returns the bins, each a list of item indices."""
    if size and max(size) > width:
        raise ValueError(f"an item of {max(size)} does not fit a bin of {width}")
    rows: list[list[int]] = []
    room: list[int] = []  # what is left of each bin
    for u in sorted(range(len(size)), key=lambda u: -size[u]):
        r = next((j for j, left in enumerate(room) if left >= size[u]), None)
        if r is None:
            rows.append([])
            room.append(width)
            r = len(rows) - 1
        rows[r].append(u)
        room[r] -= size[u]
    return rows
