"""``report.html``: one self-contained page per evaluation (metrics, figures, config, checkpoint and data).

The page opens offline: figures are embedded as base64 PNG data URIs, the CSS is inline, and there are no
scripts, fonts or links to fetch. Every piece of text is HTML-escaped. A figure that is missing (not written,
not a PNG) is shown as "not produced" with the reason, never as a broken image.

Example::

    write_report("outputs/demo/eval", [("synth-b", metrics)], {"CMC": Path("outputs/demo/eval/cmc.png")},
                 config_text=yaml_text, info={"checkpoint": "final.pt", "dataset": "synth-b"})
"""

from __future__ import annotations

import base64
import html
import math
import numbers
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

METRIC_KEYS = ("R1", "R5", "R10", "mAP", "mINP")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPORT_NAME = "report.html"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
       margin: 24px auto; max-width: 1360px; padding: 0 16px; line-height: 1.45; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
.subtitle { color: #59636e; margin: 0 0 16px; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; }
th { background: #f6f8fa; text-align: left; }
table.metrics td.number { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, monospace; }
table.info th { width: 160px; }
table.info td { font-family: ui-monospace, monospace; word-break: break-all; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; border: 1px solid #d0d7de; border-radius: 6px; padding: 8px; background: #fff; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { font-size: 13px; color: #59636e; margin-top: 6px; }
.missing { width: 320px; padding: 40px 12px; text-align: center; color: #9a6700; background: #fff8c5; }
.note { font-size: 13px; color: #59636e; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px; font-size: 12px;
      overflow-x: auto; }
"""


def write_report(out_dir: str | Path, metric_rows: Sequence[tuple[str, Mapping[str, float]]],
                 figures: Mapping[str, str | Path | None], config_text: str, info: Mapping[str, Any],
                 title: str = "gds-reid evaluation", notes: Mapping[str, str] | None = None) -> Path:
    """Write ``out_dir/report.html`` and return its path.

    Args:
        out_dir: folder of the evaluation outputs (created if missing).
        metric_rows: (label, metrics) table rows in order, e.g. the dataset's row then the transductive
            camera-norm row; metrics hold fractions in [0, 1] under ``METRIC_KEYS`` (other keys, such as
            ``cmc``, are ignored), shown as percentages with one decimal, as ``scripts/eval.py`` prints them.
        figures: caption -> PNG path, in display order; ``None`` or a path that is not a readable PNG is
            shown as "not produced".
        config_text: the resolved config, as YAML text; shown verbatim (escaped).
        info: checkpoint / dataset facts (name -> value), shown as a two-column table.
        title: page title and heading.
        notes: caption -> why a figure was not produced (shown in its place).

    Returns:
        ``out_dir / "report.html"``, UTF-8, with no reference to anything outside the file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = notes or {}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_text(title)}</h1>",
        f'<p class="subtitle">{_text(_subtitle(info))}</p>',
        "<h2>Metrics</h2>",
        _metrics_table(metric_rows),
        '<p class="note">Percentages. R<i>k</i>: CMC at rank <i>k</i>; mAP: mean average precision; '
        "mINP: mean inverse negative penalty. A \u201ctransductive\u201d row uses statistics of the unlabelled "
        "query + gallery images and is not the standard protocol.</p>",
        "<h2>Figures</h2>",
        '<div class="figures">',
        *(_figure(caption, path, notes.get(caption, "")) for caption, path in figures.items()),
        "</div>",
        "<h2>Checkpoint and data</h2>",
        _info_table(info),
        "<h2>Config</h2>",
        f'<pre class="config">{_text(config_text)}</pre>',
        "</body>",
        "</html>",
    ]
    path = out_dir / REPORT_NAME
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def format_percent(value: Any) -> str:
    """A metric fraction as the table shows it: ``0.3994 -> "39.9"``; missing or non-numeric -> ``"n/a"``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return "n/a"
    if not math.isfinite(value):
        return str(float(value))  # nan / inf: shown, never hidden
    return f"{100 * float(value):.1f}"


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None when ``data`` is not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _text(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _subtitle(info: Mapping[str, Any]) -> str:
    facts = [f"{key} {info[key]}" for key in ("dataset", "checkpoint") if key in info]
    return " \u00b7 ".join(facts)


def _metrics_table(metric_rows: Sequence[tuple[str, Mapping[str, float]]]) -> str:
    header = "".join(f"<th>{key}</th>" for key in METRIC_KEYS)
    rows = ['<table class="metrics">', f"<thead><tr><th>evaluated on</th>{header}</tr></thead>", "<tbody>"]
    for label, values in metric_rows:
        cells = "".join(f'<td class="number">{_text(format_percent(values.get(key)))}</td>' for key in METRIC_KEYS)
        rows.append(f"<tr><th>{_text(label)}</th>{cells}</tr>")
    if not metric_rows:
        rows.append(f'<tr><td colspan="{len(METRIC_KEYS) + 1}">no metrics</td></tr>')
    rows += ["</tbody>", "</table>"]
    return "\n".join(rows)


def _figure(caption: str, path: str | Path | None, note: str) -> str:
    data, reason = _read_png(path)
    if data is None:
        reason = note or reason
        return (f'<figure><div class="missing">{_text(caption)}: not produced ({_text(reason)})</div>'
                f"<figcaption>{_text(caption)}</figcaption></figure>")
    width, height = png_size(data)
    source = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure><img src="{source}" width="{width}" height="{height}" alt="{_text(caption)}">'
            f"<figcaption>{_text(caption)} ({_text(Path(path).name)})</figcaption></figure>")


def _read_png(path: str | Path | None) -> tuple[bytes | None, str]:
    """The file's bytes when it is a PNG, else (None, why not)."""
    if path is None:
        return None, "not written"
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return None, f"{Path(path).name}: {error.strerror or error}"
    if png_size(data) is None:
        return None, f"{Path(path).name} is not a PNG file"
    return data, ""


def _info_table(info: Mapping[str, Any]) -> str:
    rows = ['<table class="info">', "<tbody>"]
    rows += [f"<tr><th>{_text(key)}</th><td>{_text(_plain(value))}</td></tr>" for key, value in info.items()]
    rows += ["</tbody>", "</table>"]
    return "\n".join(rows)


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{key}: {_plain(item)}" for key, item in value.items())
    return str(value)
