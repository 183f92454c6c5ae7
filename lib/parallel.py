"""Ordered parallel map over cases with a progress bar; results do not depend on worker count."""
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm


def parallel_map(fn, items, workers: int, desc: str):
    """`[fn(item) for item in items]`, spread over `workers` processes, in input order."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in tqdm(items, desc=desc, unit="case", disable=None)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(fn, items), total=len(items), desc=desc, unit="case", disable=None))
