"""What the ``prepare_*.py`` scripts share: running a conversion over many images.

The scripts import it as a sibling module (``python datasets/prepare_X.py`` puts this folder
on ``sys.path``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable

from tqdm import tqdm


def run_tasks(
    func: Callable, tasks: list, workers: int | None, description: str, chunksize: int = 16
) -> None:
    """Call ``func`` on every task with a progress bar, in a process pool when ``workers > 1``.

    Args:
        func: a picklable function of one task.
        tasks: its arguments.
        workers: processes; None uses every CPU.
        description: the progress bar's label.
        chunksize: tasks handed to a worker at a time.
    """
    if workers is None:
        workers = os.cpu_count() or 1
    progress = tqdm(total=len(tasks), desc=description, unit="img")
    if workers <= 1:
        for task in tasks:
            func(task)
            progress.update()
    else:
        with mp.Pool(workers) as pool:
            for _ in pool.imap_unordered(func, tasks, chunksize=chunksize):
                progress.update()
    progress.close()
