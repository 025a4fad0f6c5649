"""What ``reid-search`` writes besides results.json: a ranked-list PNG and a self-contained HTML page.

Both take the search results as :func:`reid.apps.search.run` builds them: one dict per query,
``{"path", "camera", "matches": [{"rank", "path", "camera", "distance", "similarity", "gallery_index"}, ...]}``.
The HTML embeds its thumbnails as base64 JPEG, so it opens offline and survives being moved or mailed.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

THUMB_WIDTH, THUMB_HEIGHT = 64, 128  # pixels, a pedestrian crop's 1:2
TILE_INCHES = 0.9  # width of one image column in the PNG; rows are twice as high (plus the caption)


def thumbnail(path: str | Path, width: int = THUMB_WIDTH, height: int = THUMB_HEIGHT) -> Image.Image:
    """The image as RGB, resized to ``width x height``; a grey tile when it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    except (OSError, ValueError):
        return Image.new("RGB", (width, height), (200, 200, 200))


def _camera(label: str) -> str:
    return f"cam {label}" if label else ""


def write_ranked_png(results: list[dict], path: str | Path, top_k: int) -> Path:
    """One row per query: the query, then its ``top_k`` matches captioned with rank, distance and camera.

    Returns ``path``; the figure is ``(top_k + 1) * TILE_INCHES`` inches wide, 100 dpi.
    """
    rows, columns = len(results), top_k + 1
    figure = Figure(figsize=(columns * TILE_INCHES, rows * TILE_INCHES * 2.5), dpi=100)
    for row, query in enumerate(results):
        tiles = [(query["path"], f"query\n{_camera(query['camera'])}")]
        tiles += [(m["path"], f"#{m['rank']} {m['distance']:.3f}\n{_camera(m['camera'])}") for m in query["matches"]]
        for column, (image_path, caption) in enumerate(tiles):
            axes = figure.add_subplot(rows, columns, row * columns + column + 1)
            axes.imshow(thumbnail(image_path))
            axes.set_xticks([])
            axes.set_yticks([])
            axes.set_title(caption, fontsize=7, color="tab:blue" if column == 0 else "black")
    figure.tight_layout(pad=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png")
    return path


def _data_uri(image_path: str) -> str:
    buffer = io.BytesIO()
    thumbnail(image_path).save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(image_path: str, caption: str) -> str:
    name = html.escape(Path(image_path).name)
    return (f'<figure><img src="{_data_uri(image_path)}" title="{html.escape(image_path)}" alt="{name}">'
            f"<figcaption>{caption}</figcaption></figure>")


_STYLE = """body{font-family:sans-serif;margin:1em}
.row{display:flex;gap:6px;align-items:flex-start;margin-bottom:14px}
.query{border-right:3px solid #36c;padding-right:8px}
figure{margin:0;text-align:center;font-size:11px;width:80px;overflow-wrap:anywhere}
img{width:64px;height:128px;display:block;margin:auto}
.muted{color:#666}"""


def write_html(results: list[dict], path: str | Path, title: str, summary: str) -> Path:
    """``index.html``: a row per query (query framed, then its ranked matches), thumbnails embedded as base64.

    Hover a thumbnail for its full path. Returns ``path``.
    """
    rows = []
    for query in results:
        cells = [f'<div class="query">{_figure(query["path"], "query<br>" + html.escape(_camera(query["camera"])))}'
                 "</div>"]
        for match in query["matches"]:
            caption = (f"#{match['rank']} d={match['distance']:.3f}<br>"
                       f"{html.escape(_camera(match['camera']))}<br>"
                       f'<span class="muted">{html.escape(Path(match["path"]).name)}</span>')
            cells.append(_figure(match["path"], caption))
        rows.append(f'<div class="row">{"".join(cells)}</div>')
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head>\n<body><h1>{html.escape(title)}</h1>"
            f"<p class=\"muted\">{html.escape(summary)}</p>\n" + "\n".join(rows) + "\n</body></html>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
