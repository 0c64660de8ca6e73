"""A test run's results for a person: the summary printed on the terminal, and ``report.html``.

``report.html`` is one self-contained page per test run, summary and γ table first, then every image, worst first.
The page needs no server and no network: styles and the one script are inline, images are small
JPEG thumbnails written beside it in ``report/`` (about 20 kB each, loaded as they scroll into
view; L and R only when a row's "L and R" is opened). Opened as ``report.html#check``, the page
loads every image at once and records the outcome in ``<html data-images-loaded="n/m">`` (the
browser test reads it).
"""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

from rich.console import Console
from rich.table import Table

from pairlie.evaluate.scoring import ImageScore, TestResult
from pairlie.evaluate.thumbnails import KINDS, THUMB_DIR, THUMB_SIZE, save_thumbnails, thumbnail_name  # noqa: F401
from pairlie.io.files import write_atomic

# decimals printed on the terminal
PRINTED_DECIMALS = {"psnr": 3, "ssim": 4, "niqe": 3, "loe": 1}
# decimals shown for each measure in the page; the browser test checks the page against metrics.json with them
DECIMALS = {"psnr": 3, "ssim": 4, "lpips": 4, "niqe": 3, "loe": 2}
LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS", "niqe": "NIQE", "loe": "LOE"}

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right;vertical-align:top}
th{background:#f3f3f3}td.name{text-align:left;font-family:monospace}
td.best{font-weight:bold;background:#e8f5e9}
td.images{text-align:left}.images img{height:160px;margin-right:4px}.images figure{display:inline-block;margin:0 4px 0 0}
figcaption{font-size:12px;color:#666}.na{color:#a00}
"""

CHECK_SCRIPT = """
function loaded(img) {
  if (img.complete) return Promise.resolve(img.naturalWidth > 0);
  return new Promise((done) => {
    img.addEventListener("load", () => done(img.naturalWidth > 0));
    img.addEventListener("error", () => done(false));
  });
}
if (location.hash === "#check") {
  const images = [...document.images];
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
  images.forEach((img) => { img.loading = "eager"; });
  Promise.all(images.map(loaded)).then((ok) => {
    const root = document.documentElement;
    root.dataset.imagesLoaded = ok.filter(Boolean).length + "/" + images.length;
    root.dataset.imagesBroken = images.filter((_, k) => !ok[k]).map((img) => img.getAttribute("src")).join(" ");
  });
}
"""


def fmt(value: float | None, key: str) -> str:
    """A score as the page shows it."""
    return "" if value is None else f"{value:.{DECIMALS[key]}f}"


def _cell(value: float | None, key: str, data_key: str, best: bool = False, na: str | None = None) -> str:
    data_key = html.escape(data_key)
    if value is None and na:
        return f'<td class="na" title="{html.escape(na)}"><span data-key="{data_key}">n/a</span></td>'
    cls = ' class="best"' if best else ""
    return f'<td{cls}><span data-key="{data_key}">{fmt(value, key)}</span></td>'


def _measures(result: TestResult, metrics: dict) -> list[str]:
    keys = [k for k in ("psnr", "ssim") if result.paired]
    if metrics.get("lpips") is not None:
        keys.append("lpips")
    return keys + (["niqe", "loe"] if result.noref else [])


def worst_first(result: TestResult) -> tuple[list[ImageScore], str]:
    """The first γ's rows, worst first (lowest PSNR where references exist, else highest NIQE), and the rule."""
    rows = result.rows()
    if result.paired:
        return sorted(rows, key=lambda s: s.psnr), "lowest PSNR first"
    if result.noref:
        return sorted(rows, key=lambda s: (s.niqe is None, -(s.niqe or 0.0))), "highest NIQE first (n/a last)"
    return rows, "test-set order"


def build_report(result: TestResult, metrics: dict) -> str:
    """The HTML of the report of a test run whose ``metrics.json`` is ``metrics``."""
    keys = _measures(result, metrics)
    title = f"pairlie-test: {metrics['count']} images, {html.escape(Path(metrics.get('test_dir', '')).name)}"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{title}</title><style>{STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
        f"<p>checkpoint <code>{html.escape(str(metrics.get('checkpoint', '')))}</code>; "
        f"test set <code>{html.escape(str(metrics.get('test_dir', '')))}</code>; "
        f'γ <span data-key="gamma">{metrics["gamma"]:g}</span>. Lower is better for NIQE and LOE.</p>',
        "<h2>Summary</h2><table><tr><th></th>" + "".join(f"<th>{LABELS[k]}</th>" for k in keys) + "</tr>",
    ]
    input_keys = {"psnr": "input_psnr", "ssim": "input_ssim", "niqe": "input_niqe"}
    row = "".join(_cell(metrics.get(input_keys[k]), k, input_keys[k]) if k in input_keys else "<td></td>" for k in keys)
    parts.append(f"<tr><th>input</th>{row}</tr>")
    row = "".join(_cell(metrics.get(k), k, k) for k in keys)
    parts.append(f"<tr><th>enhanced (γ {metrics['gamma']:g})</th>{row}</tr></table>")
    if metrics.get("niqe_na"):
        parts.append(f'<p class="na">NIQE n/a for {len(metrics["niqe_na"])} image(s): see their rows.</p>')
    parts.extend(f'<p class="warning">warning: {html.escape(w)}</p>' for w in metrics.get("warnings", []))
    parts.append("<h2>γ</h2><table><tr><th>γ</th>" + "".join(f"<th>{LABELS[k]}</th>" for k in keys) + "</tr>")
    best = metrics.get("best_gamma", {})
    for i, entry in enumerate(metrics["gamma_table"]):
        cells = "".join(
            _cell(
                entry[k],
                k,
                f"gamma_table.{i}.{k}",
                best=len(metrics["gamma_table"]) > 1 and best.get(k) == entry["gamma"],
            )
            for k in keys
        )
        parts.append(f'<tr><th data-key="gamma_table.{i}.gamma">{entry["gamma"]:g}</th>{cells}</tr>')
    parts.append("</table>")
    if len(metrics["gamma_table"]) > 1:
        named = ", ".join(f"{LABELS[k]} γ {best[k]:g}" for k in keys if k in best)
        parts.append(f"<p>Best γ per measure (bold): {named}. Images below are at γ {metrics['gamma']:g}.</p>")
    rows, rule = worst_first(result)
    parts.append(f"<h2>Images, {rule}</h2><table><tr><th>image</th>")
    parts.append("".join(f"<th>{LABELS[k]}</th>" for k in keys) + "<th>input | enhanced")
    parts.append(" | reference" if result.paired else "")
    parts.append("</th></tr>")
    for score in rows:
        parts.append(_image_row(score, keys, result.paired))
    parts.append(f"</table><script>{CHECK_SCRIPT}</script></body></html>\n")
    return "\n".join(parts)


def _image_row(score: ImageScore, keys: list[str], paired: bool) -> str:
    name = html.escape(score.name)
    cells = []
    for k in keys:
        text = _cell(getattr(score, k), k, f"per_image.{score.name}.{k}", na=getattr(score, f"{k}_na", None))
        if k in ("psnr", "niqe"):
            value, na = getattr(score, f"input_{k}"), getattr(score, f"input_{k}_na", None)
            shown = "n/a" if value is None and na else fmt(value, k)
            text = text.replace(
                "</td>", f'<br><small>input <span data-key="per_image.{name}.input_{k}">{shown}</span></small></td>'
            )
        cells.append(text)

    def figure(kind: str) -> str:
        src = html.escape(f"{THUMB_DIR}/{quote(thumbnail_name(score.name, kind))}")
        return f'<figure><img loading="lazy" src="{src}" alt="{kind}"><figcaption>{kind}</figcaption></figure>'

    shown = ["input", "enhanced"] + (["reference"] if paired else [])
    images = "".join(figure(k) for k in shown)
    decomposition = f"<details><summary>L and R</summary>{figure('L')}{figure('R')}</details>"
    return f'<tr><td class="name">{name}</td>{"".join(cells)}<td class="images">{images}{decomposition}</td></tr>'


def write_report(result: TestResult, metrics: dict, out_dir: Path) -> Path:
    """Write ``out_dir/report.html`` (thumbnails are already in ``out_dir/report/``); returns its path."""
    path = out_dir / "report.html"
    write_atomic(path, build_report(result, metrics))
    return path


def print_summary(metrics: dict) -> None:
    """Print the summary of a test run's ``metrics.json``: input and enhanced (a row per γ) under every measure scored."""
    keys = [k for k in ("psnr", "ssim") if metrics["paired"]]
    keys += [k for k in ("niqe", "loe") if "niqe" in metrics["protocol"]]

    def shown(value, key):
        return "n/a" if value is None else f"{value:.{PRINTED_DECIMALS[key]}f}"

    gammas = metrics["gammas"]
    source = metrics.get("test_dir", "")
    conv = f", {metrics['conv']} convolutions" if "conv" in metrics else ""
    if metrics.get("precision", "fp32") != "fp32":  # not the paper's protocol: say so where the scores are read
        conv += f", {metrics['precision']}"
        if "calibration" in metrics:
            conv += f" calibrated on {metrics['calibration']['images']} image(s) of {metrics['calibration']['source']}"
    print(f"pairlie-test: {metrics['count']} images of {source}, gamma {', '.join(f'{g:g}' for g in gammas)}{conv}")
    table = Table()
    for column in ("", *(LABELS[k] for k in keys)):
        table.add_column(column, justify="right")
    table.add_row("input", *(shown(metrics.get(f"input_{k}"), k) if k != "loe" else "" for k in keys))
    for row in metrics["gamma_table"]:
        label = "enhanced" if len(gammas) == 1 else f"enhanced, gamma {row['gamma']:g}"
        table.add_row(label, *(shown(row[k], k) for k in keys))
    Console().print(table)
    if len(gammas) > 1:
        best = metrics["best_gamma"]
        print("best gamma: " + ", ".join(f"{LABELS[k]} {best[k]:g}" for k in keys if k in best))
    if metrics["niqe_na"]:
        name, reason = next(iter(metrics["niqe_na"].items()))
        print(f"NIQE n/a for {len(metrics['niqe_na'])} image(s), e.g. {name}: {reason}")
    for warning in metrics.get("warnings", []):
        print(f"warning: {warning}")
