"""Where virtual tokens land in a padded batch, and how positions map back."""

import pytest
import torch

from prompttune.core.virtual_tokens import gather_positions, insert_virtual_tokens


def _batch(padding_side: str):
    # Row 0 has 3 real tokens, row 1 has 1; real token t of row b is embedded as the value 10*b + t + 1.
    lengths = [3, 1]
    embeds = torch.zeros(2, 3, 1)
    mask = torch.zeros(2, 3, dtype=torch.long)
    for b, n in enumerate(lengths):
        offset = 0 if padding_side == "right" else 3 - n
        for t in range(n):
            embeds[b, offset + t, 0] = 10 * b + t + 1
            mask[b, offset + t] = 1
    return embeds, mask


def test_virtual_tokens_sit_before_the_first_real_token_with_right_padding():
    embeds, mask = _batch("right")
    virtual = torch.tensor([[[-1.0], [-2.0]]]).expand(2, -1, -1)
    new, new_mask, _, real_index = insert_virtual_tokens(embeds, mask, virtual)
    assert new[..., 0].tolist() == [[-1, -2, 1, 2, 3], [-1, -2, 11, 0, 0]]
    assert new_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert real_index.tolist() == [[2, 3, 4], [2, 3, 4]]


def test_virtual_tokens_sit_after_left_padding():
    embeds, mask = _batch("left")
    virtual = torch.tensor([[[-1.0], [-2.0]]]).expand(2, -1, -1)
    new, new_mask, _, real_index = insert_virtual_tokens(embeds, mask, virtual)
    assert new[..., 0].tolist() == [[-1, -2, 1, 2, 3], [0, 0, -1, -2, 11]]
    assert new_mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    assert real_index.tolist() == [[2, 3, 4], [0, 1, 4]]
    # Every original position maps back to the token that was there.
    assert torch.equal(gather_positions(new, real_index), embeds)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("filler_last", [False, True])
def test_prompts_of_different_lengths_are_masked_not_recomputed(side, filler_last):
    """A row whose prompt is shorter gets masked filler slots at the very start of the row (or at its
    very end), and its own tokens keep their order around its prompt."""
    embeds, mask = _batch(side)
    virtual = torch.tensor([[[-1.0], [-2.0]], [[-3.0], [99.0]]])  # row 1's prompt has one token
    virtual_mask = torch.tensor([[1, 1], [1, 0]])
    new, new_mask, _, real_index = insert_virtual_tokens(embeds, mask, virtual, virtual_mask, filler_last=filler_last)
    # Row 0 uses both slots, as with a single prompt.
    full, full_mask, _, full_index = insert_virtual_tokens(embeds[:1], mask[:1], virtual[:1])
    assert (
        torch.equal(new[:1], full) and torch.equal(new_mask[:1], full_mask) and torch.equal(real_index[:1], full_index)
    )
    row = new[1, :, 0].tolist()
    attended = [v for v, m in zip(row, new_mask[1].tolist()) if m]
    assert attended == [-3.0, 11.0]  # its prompt, then its one real token
    filler = row.index(99.0)
    assert new_mask[1, filler] == 0
    assert filler == (4 if filler_last else 0)
    assert torch.equal(gather_positions(new, real_index), embeds)


def test_token_type_ids_follow_their_tokens():
    embeds, mask = _batch("right")
    types = torch.tensor([[0, 1, 1], [0, 0, 0]])
    _, _, new_types, _ = insert_virtual_tokens(embeds, mask, torch.zeros(2, 2, 1), token_type_ids=types)
    assert new_types.tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]]
