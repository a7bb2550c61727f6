"""Tests of the benchmark's own parts; bench/ scripts import each other by name."""

import sys
from pathlib import Path

BENCH_DIR = str(Path(__file__).resolve().parents[2] / "bench")
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)
