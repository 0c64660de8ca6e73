"""docs/benchmark.md's tables, written from the JSON that scripts/benchmark.py saves (``--out``).

A generated table sits between two comments in the page, the first naming the table and its JSON:

    <!-- benchmark table: speed, from benchmarks/2026-12-05-epyc-9r14.json -->
    ...
    <!-- end of benchmark table -->

``python scripts/benchmark.py --tables`` rewrites every such block from its JSON; ``--tables --check``
exits with status 1 when a block differs (tests/test_docs.py runs it). A figure a run did not
measure is an empty cell, a column skipped at a size shows why in parentheses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from bench.column import (
    BF16,
    DEFAULT,
    DEFAULT_MALLOC,
    EXACT,
    INT8,
    OPENVINO,
    OPENVINO_DEFAULT,
    ORT,
    ORT_INT8,
    PUBLISHED,
    WINOGRAD,
)

PAGE = Path(__file__).resolve().parents[2] / "docs" / "benchmark.md"
BLOCK = re.compile(
    r"(<!-- benchmark table: (?P<name>[\w-]+), from (?P<json>[\w./-]+\.json) -->\n)(?P<body>.*?)(<!-- end of benchmark table -->)",
    re.S,
)
BIG = "4000x3000"
# the fp32 columns of the speed table, and what each is called there
SPEED_COLUMNS = {
    PUBLISHED: "published",
    EXACT: "pairlie exact",
    WINOGRAD: "pairlie Winograd",
    ORT: "ONNX Runtime",
    OPENVINO: "OpenVINO",
}
PRECISION_ROWS = {
    DEFAULT: "pairlie default (`precision=auto conv=auto`: what pairlie-enhance runs here)",
    EXACT: "pairlie fp32 exact (`precision=fp32 conv=direct`)",
    BF16: "pairlie bf16 (`precision=bf16`)",
    INT8: "pairlie int8 (`precision=int8`)",
    OPENVINO_DEFAULT: "OpenVINO, its default precision",
    ORT: "ONNX Runtime fp32",
    ORT_INT8: "ONNX Runtime int8 (static QDQ, the layers pairlie runs in int8)",
}


def seconds(value: float) -> str:
    """Three significant figures, as the page has always written times."""
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"


def ratio(value: float) -> str:
    return f"{value:.2f}×"


def _row(label: str, cells: list[str]) -> str:
    return "| " + " | ".join([label, *cells]) + " |"


def _bold_best(cells: dict[str, float | None], fmt: Callable[[float], str], smallest: bool) -> dict[str, str]:
    measured = {kind: v for kind, v in cells.items() if v is not None}
    best = (min if smallest else max)(measured.values()) if len(measured) > 1 else None
    return {kind: "" if v is None else (f"**{fmt(v)}**" if v == best else fmt(v)) for kind, v in cells.items()}


def _big_cell(section: dict, skipped: dict, kind: str, fastest: float | None) -> str:
    """A column's 4000x3000 cell: its time (bold when the fastest) and peak memory, else why it was skipped."""
    if f"{kind}_s" in section:
        time = seconds(section[f"{kind}_s"])
        peak = section.get("peak_rss_mb", {}).get(kind)
        return (f"**{time}**" if section[f"{kind}_s"] == fastest else time) + (
            f", {peak / 1024:.2f} GB peak" if peak else ""
        )
    need = re.search(r"needs about ([\d.]+ GB)", skipped.get(f"{kind}_{BIG}", ""))
    return f"(needs ~{need.group(1)})" if need else ""


def speed(result: dict) -> list[str]:
    """The fp32 columns side by side: inference at each size, a folder, grey levels, training."""
    kinds = [kind for kind in SPEED_COLUMNS if kind in result["columns"]]
    lines = [_row("", [SPEED_COLUMNS[k] for k in kinds]), "|---" * (len(kinds) + 1) + "|"]
    for size in ("600x400", "1920x1080"):
        section = result.get(f"infer_{size}", {})
        cells = _bold_best({k: section.get(f"{k}_s") for k in kinds}, seconds, smallest=True)
        lines.append(_row(f"inference {size.replace('x', '×')}", [cells[k] for k in kinds]))
    if f"infer_{BIG}" in result:
        section = result[f"infer_{BIG}"]
        fastest = min((section[f"{k}_s"] for k in kinds if f"{k}_s" in section), default=None)
        cells = [_big_cell(section, result.get("skipped", {}), kind, fastest) for kind in kinds]
        lines.append(_row(f"inference {BIG.replace('x', '×')}", cells))
    if "folder_images_per_s" in result:
        folder = result["folder_images_per_s"]
        cells = _bold_best({k: folder.get(k) for k in kinds}, lambda v: f"{v:.2f}", smallest=False)
        lines.append(
            _row("a folder: 15 LOL-test photos decoded, enhanced, written as PNG, images/s", [cells[k] for k in kinds])
        )
    diffs = result.get("infer_600x400", {}).get("max_grey_level_diff_vs_pairlie_exact", {})
    lines.append(
        _row(
            "max grey-level difference from pairlie exact (600×400)",
            ["0" if k == EXACT else str(diffs[k]) if k in diffs else "" for k in kinds],
        )
    )
    whole = result.get("train_step_whole_process")
    if whole:
        cells = _bold_best({k: whole.get(f"{k}_s_per_step") for k in kinds}, lambda v: f"{v:.3f} s", smallest=True)
        lines.append(_row("training step 128², batch 1, whole processes (T110 − T10) / 100", [cells[k] for k in kinds]))
    steps = [key for key in ("train_b1", "train_b8") if key in result]
    if steps:
        per = {k: [result[key].get(f"{k}_pair_steps_per_s") for key in steps] for k in kinds}
        best = [max((per[k][i] for k in kinds if per[k][i] is not None), default=None) for i in range(len(steps))]
        cells = [
            " / ".join(
                "" if v is None else f"**{v:.2f}**" if v == best[i] else f"{v:.2f}" for i, v in enumerate(per[k])
            )
            if any(v is not None for v in per[k])
            else ""
            for k in kinds
        ]
        label = "training pair-steps/s 128², " + " / ".join(f"batch {key[7:]}" for key in steps) + ", in-process"
        lines.append(_row(label, cells))
    return lines


def _speedups(result: dict, section: str, ratios: list[tuple[str, str]]) -> str:
    """The section's speed-ups ``a_over_b`` for ``ratios``, joined by " / "; empty where none was measured."""
    speedup = result.get(section, {}).get("speedup", {})
    found = [speedup.get(f"{a}_over_{b}") for a, b in ratios]
    if all(v is None for v in found):
        return ""
    return " / ".join("" if v is None else ratio(v) for v in found)


def contributions(result: dict) -> list[str]:
    """The speed-ups each change gives, section by section (b's time / a's time, same run)."""
    sections = [("600×400", "infer_600x400"), ("1920×1080", "infer_1920x1080"), ("4000×3000", f"infer_{BIG}")]
    training = [key for key in ("train_b1", "train_b8", "train_step_whole_process") if key in result]
    header = [name for name, _ in sections]
    if training:
        header.append(
            "training ("
            + " / ".join(
                {"train_b1": "in-process b1", "train_b8": "in-process b8", "train_step_whole_process": "whole process"}[
                    k
                ]
                for k in training
            )
            + ")"
        )
    lines = [_row("what each change contributes (same run)", header), "|---" * (len(header) + 1) + "|"]
    pairs = [
        ("pairlie exact over published", [(EXACT, PUBLISHED)]),
        ("pairlie Winograd over pairlie exact", [(WINOGRAD, EXACT)]),
        ("pairlie exact over ONNX Runtime / OpenVINO", [(EXACT, ORT), (EXACT, OPENVINO)]),
        ("allocator setting (exact over exact without it)", [(EXACT, DEFAULT_MALLOC)]),
    ]
    for label, ratios in pairs:
        cells = [_speedups(result, key, ratios) for _, key in sections]
        if training:
            cells.append(" / ".join(_speedups(result, key, ratios) for key in training))
        lines.append(_row(label, cells))
    return lines


def precisions(result: dict) -> list[str]:
    """Every precision against the fp32 exact path at 600×400 and 1920×1080."""
    lines = [_row("", ["600×400", "vs fp32", "1920×1080", "vs fp32"]), "|---" * 5 + "|"]
    for kind, label in PRECISION_ROWS.items():
        cells = []
        for size in ("600x400", "1920x1080"):
            section = result.get(f"infer_{size}", {})
            if f"{kind}_s" in section and f"{EXACT}_s" in section:
                cells += [seconds(section[f"{kind}_s"]), ratio(section[f"{EXACT}_s"] / section[f"{kind}_s"])]
            else:
                cells += ["", ""]
        if any(cells):
            lines.append(_row(label, cells))
        elif kind in result.get("skipped", {}):
            lines.append(_row(label, [f"not run: {result['skipped'][kind]}", "", "", ""]))
    return lines


def quality(result: dict) -> list[str]:
    """Each inference column's mean PSNR/SSIM on LOL-test at the benchmark's γ, and its difference from fp32."""
    scores = result["quality_lol"]
    lines = [_row("", ["LOL-test PSNR / SSIM", "difference from pairlie exact"]), "|---" * 3 + "|"]
    names = {**SPEED_COLUMNS, **PRECISION_ROWS}
    for kind, score in scores.items():
        if not isinstance(score, dict):
            continue
        diff = (
            ""
            if kind == EXACT
            else f"{score['psnr_diff_vs_pairlie_exact']:+.4f} dB / {score['ssim_diff_vs_pairlie_exact']:+.5f}"
        )
        lines.append(_row(names.get(kind, kind), [f"{score['psnr']:.4f} / {score['ssim']:.5f}", diff]))
    return lines


def machine(result: dict) -> list[str]:
    """One paragraph: when, where, what versions, how many rounds."""
    m = result["machine"]
    versions = [f"torch {m['torch']}"] + [
        f"{name} {info['version']}"
        for kind, info in result["columns"].items()
        for name in [kind.split("_")[0]]
        if "version" in info and kind in (ORT, OPENVINO)
    ]
    rounds = [
        f"{result[key]['rounds']} at {key[6:].replace('x', '×')}"
        for key in result
        if key.startswith("infer_") and "rounds" in result[key]
    ]
    forced = f"; torch's kernels held to {m['isa']}" if m.get("isa") else ""
    return [
        f"Measured on {m.get('date', 'an unrecorded date')}, {'quick' if m['quick'] else 'full'} mode: "
        f"{cpu_words(m['cpu'])}, {m['threads']} threads{forced}; {', '.join(versions)}. "
        f"Medians of rounds: {', '.join(rounds)}."
    ]


def cpu_words(cpu: dict | str) -> str:
    """The CPU as ``pairlie.infer.precision.cpu_description`` records it, in words."""
    if isinstance(cpu, str):
        return cpu
    flags = " ".join(cpu["flags"]) or "no bf16 or int8 dot-product flags"
    return f"{cpu['model']} ({flags}; torch's capability {cpu['torch_capability']})"


TABLES: dict[str, Callable[[dict], list[str]]] = {
    "machine": machine,
    "speed": speed,
    "contributions": contributions,
    "precisions": precisions,
    "quality": quality,
}


def render(page: str, folder: Path) -> str:
    """``page`` with every generated block rewritten from the JSON it names (relative to ``folder``)."""

    def block(match: re.Match) -> str:
        name, source = match["name"], folder / match["json"]
        if name not in TABLES:
            raise SystemExit(f"error: {PAGE.name}: no table called {name!r}; choose from {', '.join(TABLES)}")
        if not source.is_file():
            raise SystemExit(f"error: {PAGE.name}: table {name!r} reads {source}, which does not exist")
        lines = TABLES[name](json.loads(source.read_text()))
        return match.group(1) + "\n".join(lines) + "\n" + match.group(5)

    return BLOCK.sub(block, page)


def update(check: bool, page: Path = PAGE) -> bool:
    """Rewrite the page's generated tables (``check``: only compare); whether they were current."""
    text = page.read_text()
    new = render(text, page.parent)
    if not check and new != text:
        page.write_text(new)
    return new == text
