"""head+tail truncation: both ends of an over-long text kept, special tokens kept, short texts untouched."""

from __future__ import annotations

import pytest

from lmforge.tokenize.truncate import keep_head_and_tail


def test_short_texts_are_untouched():
    assert keep_head_and_tail([2, 10, 11, 3], [1, 0, 0, 1], 8) == [2, 10, 11, 3]


def test_long_texts_keep_a_quarter_of_the_head_and_the_tail_with_their_special_tokens():
    content = list(range(100, 200))  # 100 content ids
    ids, mask = [2, *content, 3], [1, *[0] * 100, 1]
    cut = keep_head_and_tail(ids, mask, 18)  # room for 16 content tokens: 4 head + 12 tail
    assert cut == [2, *content[:4], *content[-12:], 3]
    assert len(cut) == 18


def test_no_room_for_text_is_an_error():
    with pytest.raises(ValueError, match="no room"):
        keep_head_and_tail([2, 5, 6, 3], [1, 0, 0, 1], 2)
