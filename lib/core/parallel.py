"""Ordered parallel map over cases with a progress bar; results do not depend on worker count."""
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from itertools import islice

from tqdm import tqdm


def parallel_imap(fn, items, workers: int, desc: str):
    """Yield `fn(item)` for each item, in input order, computed on `workers` processes.

    At most 2 x workers results are in flight, so memory stays bounded however many items
    there are (the consumer writes each result before the next is held).
    """
    items = list(items)
    progress = tqdm(total=len(items), desc=desc, unit="case", disable=None)
    if workers <= 1 or len(items) <= 1:
        for item in items:
            yield fn(item)
            progress.update()
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        try:
            todo = iter(items)
            pending = deque(pool.submit(fn, item) for item in islice(todo, 2 * workers))
            while pending:
                result = pending.popleft().result()
                pending.extend(pool.submit(fn, item) for item in islice(todo, 1))
                yield result
                progress.update()
        finally:   # also when the consumer stops early (use contextlib.closing): no worker outlives it
            pool.shutdown(wait=True, cancel_futures=True)
    progress.close()


def parallel_map(fn, items, workers: int, desc: str) -> list:
    """`[fn(item) for item in items]`, spread over `workers` processes, in input order."""
    return list(parallel_imap(fn, items, workers, desc))
