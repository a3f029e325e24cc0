"""`marl.train.memory_mb`: the per-step peak sees a step's transient allocation once, and the
overall peak never falls (resetting the kernel's high-water mark resets ru_maxrss too)."""
from pathlib import Path

import numpy as np
import pytest

from marl.train import memory_mb


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_step_peak_sees_a_freed_allocation_once_and_the_overall_peak_keeps_it():
    memory_mb()  # start a step
    a = np.ones(300 * 2**20 // 8)  # 300 MB touched, then freed (numpy returns it to the OS: mmap)
    del a
    during, after = memory_mb(), memory_mb()
    if "system/step_peak_rss_mb" not in during:
        pytest.skip("this container does not allow resetting the high-water mark")
    assert during["system/step_peak_rss_mb"] - after["system/step_peak_rss_mb"] > 250
    assert after["system/peak_rss_mb"] >= during["system/step_peak_rss_mb"]
    assert after["system/peak_rss_mb"] >= during["system/peak_rss_mb"]
    assert after["system/rss_mb"] < during["system/step_peak_rss_mb"] - 250
