"""Shared pieces of the benchmarks: the workload, timing, and the machine's description."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time

import numpy as np

from minivae import VAEConfig, data

# The paper's MNIST model on grayscale Fashion-MNIST: 784-500-20, tanh, Bernoulli, L = 1, float32.
MODEL = VAEConfig(x_dim=784, hidden=(500,), z_dim=20, activation="tanh", likelihood="bernoulli",
                  n_samples=1, init="normal")


def load_workload(allow_digits: bool = False):
    """Fashion-MNIST from any place minivae finds it (Debian: apt install dataset-fashion-mnist)."""
    if data.locate("fashion-mnist") is None:
        if not allow_digits:
            sys.exit("benchmarks need Fashion-MNIST: `apt install dataset-fashion-mnist`, or put the "
                     "IDX files in $MINIVAE_DATA, or run `python -m minivae fetch fashion-mnist`")
    return data.load_dataset("fashion-mnist", progress=False)


def median(xs):
    return statistics.median(xs)


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def describe_machine(threads: int) -> list[str]:
    from threadpoolctl import threadpool_info
    lines = [f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
             f"threads fixed at {threads}"]
    for info in threadpool_info():
        lines.append(f"  {info['user_api']}: {info['internal_api']} {info.get('version')} "
                     f"({info.get('architecture', '?')}), {info['num_threads']} threads, {info['filepath'].split('/')[-1]}")
    return lines


def peak_rss_mib() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
