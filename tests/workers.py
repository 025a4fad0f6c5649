"""Forked worker processes for the 2-process (gloo) tests: a free local port and a bounded run of ``fn``."""

from __future__ import annotations

import socket
import sys
import time

import pytest
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_workers(fn, nprocs: int, args: tuple, timeout: float = 120) -> None:
    """``fn(rank, *args)`` in ``nprocs`` processes; fails the test (killing them) after ``timeout`` seconds."""
    # fork (as DataLoader workers do) takes ~1 s here, spawn ~10 s of re-importing torch
    start_method = "fork" if sys.platform.startswith("linux") else "spawn"
    context = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method=start_method)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.terminate()
            pytest.fail(f"workers did not finish within {timeout} s")
