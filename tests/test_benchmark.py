"""scripts/benchmark.py: its columns are plug-ins, and docs/benchmark.md's tables are what its JSON says."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import REPO

SCRIPTS = REPO / "scripts"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import bench.column
    import bench.tables

    return bench


def test_every_column_the_benchmark_names_is_a_registered_plug_in(bench):
    registry = bench.column.load_plugins()
    named = {
        value
        for key, value in vars(bench.column).items()
        if key.isupper() and isinstance(value, str) and key not in ("BENCH_EXTRA",)
    }
    assert named <= set(registry), sorted(named - set(registry))
    # one plug-in module per kind of column, each a Column
    assert {cls.__module__ for cls in registry.values()} == {
        "bench.published",
        "bench.pairlie",
        "bench.onnxruntime",
        "bench.openvino",
    }
    assert all(issubclass(cls, bench.column.Column) for cls in registry.values())


def test_a_column_registered_twice_is_refused(bench):
    assert bench.column.EXACT in bench.column.load_plugins()  # registered once, whichever test ran before
    with pytest.raises(ValueError, match="registered twice"):
        bench.column.column(bench.column.EXACT)(type("Again", (bench.column.Column,), {}))


def test_the_page_s_tables_are_generated_from_the_json_they_name():
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "benchmark.py"), "--tables", "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


RUN = {
    "machine": {
        "device": "cpu",
        "torch": "2.13.0+cpu",
        "threads": 2,
        "cpu": {"model": "AMD EPYC", "flags": [], "torch_capability": "AVX512"},
        "machine": "x86_64",
        "quick": True,
        "date": "2026-12-05",
        "isa": "AVX2 (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2)",
    },
    "columns": {"published": {}, "pairlie_exact": {}, "onnxruntime": {"version": "1.32.0"}},
    "skipped": {"pairlie_int8": "this CPU lacks int8 dot products"},
    "quality_lol": {
        "gamma": 0.2,
        "pairlie_exact": {
            "psnr": 19.5,
            "ssim": 0.73,
            "psnr_diff_vs_pairlie_exact": 0.0,
            "ssim_diff_vs_pairlie_exact": 0,
        },
    },
    "infer_600x400": {
        "rounds": 3,
        "published_s": 2.5,
        "pairlie_exact_s": 1.25,
        "onnxruntime_s": 1.5,
        "max_grey_level_diff_vs_pairlie_exact": {"published": 1, "onnxruntime": 2},
        "speedup": {"pairlie_exact_over_published": 2.0, "pairlie_exact_over_onnxruntime": 1.2},
    },
}


def test_a_table_shows_what_the_run_measured_and_leaves_the_rest_empty(bench, tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(RUN))
    page = "\n".join(
        f"<!-- benchmark table: {name}, from run.json -->\nstale\n<!-- end of benchmark table -->"
        for name in ("machine", "speed", "contributions", "precisions")
    )
    text = bench.tables.render(page, tmp_path)
    assert "stale" not in text
    assert "| inference 600×400 | 2.5 s | **1.25 s** | 1.5 s |" in text
    assert "| inference 1920×1080 |  |  |  |" in text  # not measured in this run
    assert "| max grey-level difference from pairlie exact (600×400) | 1 | 0 | 2 |" in text
    assert "| pairlie exact over published | 2.00× |  |  |" in text
    assert "| pairlie exact over ONNX Runtime / OpenVINO | 1.20× / " in text
    assert "not run: this CPU lacks int8 dot products" in text
    assert (
        "Measured on 2026-12-05, quick mode: AMD EPYC (no bf16 or int8 dot-product flags; torch's capability "
        "AVX512), 2 threads; torch's kernels held to AVX2 (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2); "
        "torch 2.13.0+cpu, onnxruntime 1.32.0. Medians of rounds: 3 at 600×400." in text
    )


def test_a_block_naming_a_missing_json_or_an_unknown_table_is_one_line(bench, tmp_path):
    page = "<!-- benchmark table: speed, from gone.json -->\n<!-- end of benchmark table -->"
    with pytest.raises(SystemExit, match="gone.json, which does not exist"):
        bench.tables.render(page, tmp_path)
    (tmp_path / "run.json").write_text(json.dumps(RUN))
    with pytest.raises(SystemExit, match="no table called 'sped'"):
        bench.tables.render(page.replace("speed, from gone", "sped, from run"), tmp_path)
