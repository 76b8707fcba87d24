"""Process pools that are safe to open after JAX has started.

JAX runs threads, and ``fork`` from a multithreaded process can deadlock the child. On
Linux we use ``forkserver`` (children are forked from a clean single-threaded server);
elsewhere ``spawn``.
"""

from __future__ import annotations

import multiprocessing
import sys


def process_pool(processes: int | None = None):
    method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    return multiprocessing.get_context(method).Pool(processes)
