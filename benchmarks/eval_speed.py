"""Evaluation speed on cached features: RIS, weighted kNN and batched few-shot trials.

Run: .venv/bin/python benchmarks/eval_speed.py [--threads 2] [--reps 3] [--only ris,knn,fewshot]
Random features stand in for a model's (the time does not depend on their values): RIS on 20,000 images x 2,048
dimensions in 1,000 sets of 20 (ALOI-like: class = set), kNN of 10,000 queries against 50,000 training images
at 512 dimensions (100 classes, k = 200), and 100 few-shot trials (5-way 5-shot, 15 queries per class, 250
Adam iterations) at 2,048 dimensions. Prints a table with the median wall and process-CPU seconds of ``--reps``
timed runs after one warm-up run, and the target from the issue where there is one.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from invarlab.eval.fewshot import few_shot
from invarlab.eval.invariance import ris
from invarlab.eval.knn import knn_accuracy


def median_seconds(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """Median wall seconds and median process CPU seconds of ``reps`` runs after a warm-up. On a shared machine
    the CPU time / threads is what the wall time would be with the cores to ourselves."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def ris_case() -> Callable[[], object]:
    g = torch.Generator().manual_seed(0)
    sets = torch.arange(1000).repeat_interleave(20)
    feats = torch.randn(1000, 2048, generator=g)[sets] + torch.randn(20000, 2048, generator=g)
    return lambda: ris(feats, sets, sets)


def knn_case() -> Callable[[], object]:
    g = torch.Generator().manual_seed(1)
    train, test = torch.randn(50000, 512, generator=g), torch.randn(10000, 512, generator=g)
    y_train, y_test = (
        torch.randint(0, 100, (50000,), generator=g),
        torch.randint(0, 100, (10000,), generator=g),
    )
    return lambda: knn_accuracy(train, y_train, test, y_test, k=200, temperature=0.1)


def fewshot_case() -> Callable[[], object]:
    g = torch.Generator().manual_seed(2)
    labels = torch.arange(100).repeat_interleave(40)
    feats = torch.randn(100, 2048, generator=g)[labels] + torch.randn(4000, 2048, generator=g)
    return lambda: few_shot(feats, labels, ways=5, shots=5, queries=15, trials=100)


CASES = {
    "ris": ("RIS (top-10 and top-25)", "20,000 x 2,048", ris_case, 2.0),
    "knn": ("kNN top-1/top-5, k=200", "50,000 train x 10,000 test x 512", knn_case, 10.0),
    "fewshot": ("few-shot 5-way 5-shot, 100 trials", "4,000 x 2,048", fewshot_case, None),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per line (median reported)")
    ap.add_argument("--only", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.reps} runs")
    print("| evaluation | size | wall s | CPU s | target (wall s) |")
    print("| --- | --- | --- | --- | --- |")
    for key in args.only.split(","):
        name, size, build, target = CASES[key]
        wall, cpu = median_seconds(build(), args.reps)
        goal = "-" if target is None else f"< {target:g}"
        print(f"| {name} | {size} | {wall:.2f} | {cpu:.2f} | {goal} |", flush=True)


if __name__ == "__main__":
    main()
