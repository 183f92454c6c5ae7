"""Streaming stages hand freed heap memory back to the OS (lib/core/memory.py), a policy each stage
sets at its start; no library function calls the allocator."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_dvc_graph import code_closure, entry_script, stages

from lib.core.memory import release_freed_memory

ROOT = Path(__file__).resolve().parents[1]

# The pattern of a stream, in a fresh interpreter (a long-lived process's heap already has holes and
# a raised mmap threshold, which changes where the chunks land): after one multi-MB chunk is freed,
# glibc serves the next ones from its heap; freed while later small blocks pin the heap's top, they
# stay in the process until released.
STREAM = """
import json, numpy as np, psutil
from lib.core.memory import release_freed_memory
rss = lambda: psutil.Process().memory_info().rss
first = np.ones(3 << 20, dtype=np.uint8)   # mmapped; its free raises the mmap threshold
del first
chunks, pins = [], []
for _ in range(60):                         # 60 chunks of 2.5 MB from the heap, each pinned above
    chunks.append(np.ones(5 << 19, dtype=np.uint8))
    pins.append(np.ones(64, dtype=np.uint8).tobytes() * 100)
before = rss()
chunks.clear()
held = rss()
release_freed_memory()
print(json.dumps({"before": before, "held": held, "released": rss()}))
"""


def test_freed_chunks_go_back_to_the_os():
    if not release_freed_memory():
        pytest.skip("the C library has no malloc_trim (not glibc)")
    out = json.loads(subprocess.run([sys.executable, "-c", STREAM], capture_output=True, text=True,
                                    check=True).stdout)
    mb = 1 << 20
    assert (out["before"] - out["held"]) < 30 * mb, out      # free() alone returns little of the 150 MB
    assert (out["held"] - out["released"]) > 100 * mb, out   # the release returns most of it


# The same stream under the stages' policy, nothing calling release_freed_memory: as the stream reads on
# and the process grows (a 64 MB block), the thread that keep_heap_bounded started hands the freed
# chunks back. Without it (`policy` False) they stay.
BOUNDED = STREAM.replace("from lib.core.memory import release_freed_memory",
                         "import sys, time\nfrom lib.core.memory import keep_heap_bounded\n"
                         "if sys.argv[1] == '1':\n    assert keep_heap_bounded(32 << 20, 0.05)")
BOUNDED = BOUNDED.replace("release_freed_memory()", "grow = np.ones(64 << 20, dtype=np.uint8)\ntime.sleep(0.5)")


@pytest.mark.parametrize("policy", [False, True])
def test_a_stage_that_keeps_its_heap_bounded_gets_freed_chunks_back_when_it_grows(policy):
    if not release_freed_memory():
        pytest.skip("the C library has no malloc_trim (not glibc)")
    out = json.loads(subprocess.run([sys.executable, "-c", BOUNDED, str(int(policy))], capture_output=True,
                                    text=True, check=True).stdout)
    returned = out["held"] + (64 << 20) - out["released"]   # of the 150 MB of freed chunks
    if policy:
        assert returned > 100 * (1 << 20), out   # by the thread alone
    else:
        assert returned < 30 * (1 << 20), out


ALLOCATOR = re.compile(r"\b(release_freed_memory|map_large_blocks|keep_heap_bounded|malloc_trim|mallopt)\b")


def test_only_stages_tune_the_allocator_and_every_streaming_stage_does():
    in_lib = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "lib").rglob("*.py")) if p.name != "memory.py"
              for i, line in enumerate(p.read_text().splitlines(), 1) if ALLOCATOR.search(line)]
    assert not in_lib, f"allocator calls inside lib (a stage's policy, lib/core/memory.py): {in_lib}"
    streaming = {name: entry_script(st["cmd"]) for name, st in stages().items()
                 if "lib/data/dataset.py" in code_closure(entry_script(st["cmd"]))}   # chunked HDF5 reads
    assert {"embed", "train", "evaluate"} <= set(streaming)
    missing = [name for name, script in streaming.items()
               if not re.search(r"def main\(argv\):\n    keep_heap_bounded\(\)", script.read_text())]
    assert not missing, f"streaming stages that do not call keep_heap_bounded() first in main: {missing}"


# Blocks freed while a small block pins the heap above them, in a fresh interpreter: with glibc's
# default (dynamic) threshold they come from the heap and stay in the process; with large blocks
# mmapped, freeing them returns them at once, without malloc_trim.
MAPPED = """
import json, sys, numpy as np, psutil
from lib.core.memory import map_large_blocks
mapped = sys.argv[1] == "1"
if mapped:
    assert map_large_blocks()
rss = lambda: psutil.Process().memory_info().rss
first = np.ones(30 << 20, dtype=np.uint8)   # freed: raises the default threshold to 30 MB
del first
blocks, pins = [], []
for _ in range(20):                          # 20 blocks of 8 MB, each pinned above by a small block
    blocks.append(np.ones(8 << 20, dtype=np.uint8))
    pins.append(np.ones(64, dtype=np.uint8).tobytes() * 100)
before = rss()
blocks.clear()
print(json.dumps({"before": before, "after": rss()}))
"""


@pytest.mark.parametrize("mapped", [False, True])
def test_mapped_large_blocks_go_back_to_the_os_when_freed(mapped):
    if not release_freed_memory():
        pytest.skip("the C library is not glibc")
    out = json.loads(subprocess.run([sys.executable, "-c", MAPPED, str(int(mapped))], capture_output=True, text=True,
                                    check=True).stdout)
    returned = out["before"] - out["after"]
    if mapped:
        assert returned > 150 * (1 << 20), out   # nearly all of the 160 MB
    else:
        assert returned < 30 * (1 << 20), out    # the default keeps them: what map_large_blocks is for
