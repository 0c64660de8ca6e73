"""pairlie.io.speed: the allocator setting removes the page faults it is there to remove."""

import json
import subprocess
import sys

from helpers import RunIf

FAULTS = """
import json, resource, sys, torch
from pairlie.io.speed import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
for _ in range(12):  # warm up: glibc's heap settles after a few aligned blocks
    torch.empty(10 * 2**20).fill_(1)
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(10 * 2**20).fill_(1)  # 40 MB, like a batch-8 feature map: above glibc's mmap threshold
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start}))
"""


def faults(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@RunIf(linux=True)
def test_keep_freed_memory_stops_page_faulting_freed_tensors_back_in():
    default, kept = faults("default"), faults("keep")
    assert kept["applied"] is True
    # 10 x 40 MB of fresh pages is ~100,000 faults with 4 KB pages (fewer with huge pages)
    assert default["faults"] > 5_000
    assert kept["faults"] < default["faults"] / 10
