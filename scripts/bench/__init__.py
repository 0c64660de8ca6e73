"""The plug-ins of scripts/benchmark.py: one module per kind of column (bench.column says how to add one)."""
