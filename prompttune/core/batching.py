"""Rows grouped by length into forwards, so little of each forward is padding (training with
`max_batch_tokens`, mixed batches, the server)."""

from __future__ import annotations


def length_groups(
    indices: list[int], lengths: list[int], max_rows: int, max_tokens: int | None = None
) -> list[list[int]]:
    """`indices` in order of length, cut into groups of at most `max_rows` rows and, with
    `max_tokens`, at most that many padded tokens (rows x the longest row): rows of similar length
    share a forward, so little of it is padding."""
    groups, current = [], []
    for i in sorted(indices, key=lambda i: lengths[i]):
        padded = (len(current) + 1) * lengths[i]  # sorted: row i is the longest so far
        if current and (len(current) >= max_rows or (max_tokens is not None and padded > max_tokens)):
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


#: Rows run packed only where the packed sequences hold at most this share of the padded batch's
#: positions: packing has its own cost (building the block mask, gathering the outputs back), which a
#: batch of rows of like length does not repay.
PACKED_SHARE = 0.8


def packed_layout(lengths: list[int]) -> tuple[list[int], list[int], int, int] | None:
    """How a padded batch of rows of `lengths` runs packed into sequences as wide as the batch
    (`pack_rows`): (each row's sequence, where it starts in it, how many sequences, their width),
    or None where packing would not save the share of positions it needs to pay for itself."""
    length = max(lengths)
    home, start, count = pack_rows(lengths, length)
    width = max(s + n for s, n in zip(start, lengths))
    if count * width > PACKED_SHARE * len(lengths) * length:
        return None
    return home, start, count, width


def pack_rows(lengths: list[int], width: int) -> tuple[list[int], list[int], int]:
    """Whole rows of `lengths` put into sequences at most `width` long, longest first, each into
    the first sequence with room (first fit decreasing): (each row's sequence, where it starts in
    it, how many sequences)."""
    room: list[int] = []
    home, start = [0] * len(lengths), [0] * len(lengths)
    for row in sorted(range(len(lengths)), key=lambda r: -lengths[r]):
        k = next((k for k, free in enumerate(room) if lengths[row] <= free), len(room))
        if k == len(room):
            room.append(width)
        home[row], start[row] = k, width - room[k]
        room[k] -= lengths[row]
    return home, start, len(room)
