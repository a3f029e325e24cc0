"""First-fit packing (marl.packing): the SFT build's rows and the update's packed groups."""
from __future__ import annotations

import pytest

from marl.packing import first_fit


def test_first_fit_packs_by_decreasing_size():
    # 9 opens a row, 6 opens one, 5 fits neither, 3 fits the second, 2 only the third
    assert first_fit([5, 9, 3, 6, 2], 10) == [[1], [3, 2], [0, 4]]
    assert first_fit([4, 4], 4) == [[0], [1]]
    with pytest.raises(ValueError, match="does not fit"):
        first_fit([3, 11], 10)
