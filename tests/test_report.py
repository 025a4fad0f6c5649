"""report.html: a self-contained page (embedded PNGs, escaped text, no outside reference) that a browser renders.

The figures are the project's own (``reid/evaluation/plots.py``) drawn from a small computed evaluation; the
browser test runs headless Chromium when one is installed and skips with the reason otherwise.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from tiny_run import TINY_OVERRIDES

from reid.cli import eval_main
from reid.config import Config, config_to_dict
from reid.evaluation import evaluate_rank
from reid.evaluation.plots import (
    GRID_PAD,
    GRID_QUERY_GAP,
    plot_cmc,
    plot_distance_histograms,
    plot_ranked_lists,
)
from reid.evaluation.report import PNG_SIGNATURE, write_report

REPO = Path(__file__).resolve().parents[1]
HOSTILE = "</pre><script>alert('x')</script> & \"quoted\""
CAMERA_LABEL = "+ camera center (transductive)"
# Hand-picked fractions and how the table must show them (percent, one decimal, as scripts/eval.py prints them).
METRICS = {"R1": 0.39944, "R5": 0.666, "R10": 0.7731, "mAP": 0.26549, "mINP": 0.0871, "cmc": [0.39944]}
CAMERA_METRICS = {"R1": 0.5, "R5": 0.75, "R10": 0.8751, "mAP": 0.31249, "mINP": 0.12}
EXPECTED_ROWS = [["synth-b", "39.9", "66.6", "77.3", "26.5", "8.7"],
                 [CAMERA_LABEL, "50.0", "75.0", "87.5", "31.2", "12.0"]]
CAPTIONS = ("CMC curve", "query-gallery distances", "ranked lists")
TOPK, TILE_H, TILE_W = 5, 64, 32


class PageParser(HTMLParser):
    """Collects images, every src / href, the metrics table's rows and the text of <pre> and <title>."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.tags: list[str] = []
        self.metric_rows: list[list[str]] = []
        self.pre_text = ""
        self.title = ""
        self._in_metrics = self._in_cell = self._in_pre = self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        self.tags.append(tag)
        self.links += [value for name, value in attributes.items() if name in ("src", "href", "srcset", "action")]
        if tag == "img":
            self.images.append(attributes)
        elif tag == "table" and "metrics" in attributes.get("class", ""):
            self._in_metrics = True
        elif tag == "tr" and self._in_metrics:
            self.metric_rows.append([])
        elif tag in ("td", "th") and self._in_metrics and self.metric_rows:
            self._in_cell = True
            self.metric_rows[-1].append("")
        self._in_pre |= tag == "pre"
        self._in_title |= tag == "title"

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_metrics = False
        self._in_cell &= tag not in ("td", "th")
        self._in_pre &= tag != "pre"
        self._in_title &= tag != "title"

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.metric_rows[-1][-1] += data
        if self._in_pre:
            self.pre_text += data
        if self._in_title:
            self.title += data


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def decode_png(source: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert source.startswith(prefix), source[:60]
    return base64.b64decode(source[len(prefix):], validate=True)


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three evaluation figures of a small computed evaluation: 6 identities x 2 cameras, 2-D features."""
    folder = tmp_path_factory.mktemp("figures")
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(6), 4)
    camids = np.tile([0, 1, 0, 1], 6)
    features = rng.normal(size=(6, 8))[pids] + 0.6 * rng.normal(size=(pids.size, 8))
    is_query = np.tile([True, True, False, False], 6)
    distmat = np.linalg.norm(features[is_query][:, None] - features[~is_query][None], axis=2)
    images = []
    for index, pid in enumerate(pids):  # one colour per identity, so the ranked lists show who is who
        path = folder / f"{pid:04d}_c{camids[index]}_{index:02d}.png"
        Image.new("RGB", (TILE_W, TILE_H), (40 * pid, 255 - 40 * pid, 120)).save(path)
        images.append((str(path), int(pid), int(camids[index])))
    query = [item for item, keep in zip(images, is_query) if keep]
    gallery = [item for item, keep in zip(images, is_query) if not keep]
    q, g = np.array([p for _, p, _ in query]), np.array([p for _, p, _ in gallery])
    metrics = evaluate_rank(distmat, q, g, np.array([c for *_, c in query]), np.array([c for *_, c in gallery]),
                            max_rank=10)
    same = q[:, None] == g[None, :]
    return {
        "CMC curve": plot_cmc(metrics["cmc"], folder / "cmc.png"),
        "query-gallery distances": plot_distance_histograms(distmat[same], distmat[~same], folder / "distances.png"),
        "ranked lists": plot_ranked_lists(distmat, query, gallery, folder / "ranked_lists.png", num_queries=4,
                                          topk=TOPK, height=TILE_H, width=TILE_W),
    }


def config_text_with_hostile_value() -> str:
    cfg = Config()
    cfg.output.dir = HOSTILE  # a value a browser would run if it were not escaped
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


@pytest.fixture(scope="module")
def report(figures: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    info = {"checkpoint": "outputs/demo/checkpoints/final.pt", "dataset": "synth-b", "rerank": False,
            "note": HOSTILE}
    return write_report(tmp_path_factory.mktemp("report"), [("synth-b", METRICS), (CAMERA_LABEL, CAMERA_METRICS)],
                        figures, config_text=config_text_with_hostile_value(), info=info,
                        title="gds-reid evaluation on synth-b")


def test_every_image_is_an_embedded_png_of_the_figure_size(report: Path, figures: dict[str, Path]) -> None:
    page = parse(report)
    assert [image["alt"] for image in page.images] == list(CAPTIONS)
    ranked_width = GRID_PAD + (TILE_W + GRID_PAD) * (TOPK + 1) + GRID_QUERY_GAP
    expected_sizes = [(640, 480), (640, 480), (ranked_width, GRID_PAD + (TILE_H + GRID_PAD) * 4)]
    for image, path, size in zip(page.images, figures.values(), expected_sizes):
        data = decode_png(image["src"])
        assert data.startswith(PNG_SIGNATURE)
        assert data == path.read_bytes()
        with Image.open(io.BytesIO(data)) as decoded:
            decoded.load()
            assert (decoded.format, decoded.size) == ("PNG", size)
        assert (int(image["width"]), int(image["height"])) == size


def test_nothing_points_outside_the_file(report: Path) -> None:
    page = parse(report)
    assert page.links and all(link.startswith("data:image/png;base64,") for link in page.links)
    assert not {"script", "link", "iframe", "object", "embed"} & set(page.tags)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", report.read_text(encoding="utf-8").lower())
    for outside in ("http:", "https:", "file:", "url(", "@import", "//"):
        assert outside not in text, outside


def test_metrics_table_holds_exactly_the_given_numbers(report: Path) -> None:
    header, *rows = parse(report).metric_rows
    assert header == ["evaluated on", "R1", "R5", "R10", "mAP", "mINP"]
    assert rows == EXPECTED_ROWS


def test_config_and_info_text_are_escaped_and_shown_verbatim(report: Path) -> None:
    raw = report.read_text(encoding="utf-8")
    assert "<script" not in raw and "</pre><script>" not in raw
    assert "&lt;/pre&gt;&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp;" in raw
    page = parse(report)
    assert page.pre_text == config_text_with_hostile_value()  # the parser unescapes it back, character for character
    assert yaml.safe_load(page.pre_text)["output"]["dir"] == HOSTILE
    assert page.title == "gds-reid evaluation on synth-b"


def test_a_missing_figure_says_not_produced_instead_of_crashing(tmp_path: Path, figures: dict[str, Path]) -> None:
    not_a_png = tmp_path / "distances.png"
    not_a_png.write_text("half-written")
    path = write_report(tmp_path, [("synth-b", {"R1": float("nan")})],
                        {"CMC curve": figures["CMC curve"], "query-gallery distances": not_a_png,
                         "ranked lists": None, "gone": tmp_path / "nowhere.png"},
                        config_text="seed: 0\n", info={}, notes={"ranked lists": "no query has a true match"})
    page = parse(path)
    assert [image["alt"] for image in page.images] == ["CMC curve"]
    text = path.read_text(encoding="utf-8")
    assert "query-gallery distances: not produced (distances.png is not a PNG file)" in text
    assert "ranked lists: not produced (no query has a true match)" in text
    assert "gone: not produced (nowhere.png: No such file or directory)" in text
    assert page.metric_rows[1] == ["synth-b", "nan", "n/a", "n/a", "n/a", "n/a"]  # a failure is shown, not hidden


def test_eval_script_writes_a_report_with_its_metrics_and_config(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``scripts/eval.py`` on tiny synthetic data with an untrained backbone: report.html is listed among the
    written files and shows metrics.json's numbers, the three figures and the resolved config; a figure that
    cannot be drawn is a warning and "not produced" in the report, not a crash."""
    def eval_args(out: Path) -> list[str]:
        overrides = [f"data.target_root={tmp_path}/synth-b", *TINY_OVERRIDES, "eval.max_rank=10"]
        return ["--config", str(REPO / "configs" / "demo.yaml"), "--out", str(out),
                *sum([["--set", item] for item in overrides], [])]

    out = tmp_path / "eval"
    assert eval_main(eval_args(out)) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(
        f"wrote {out}/metrics.json, cmc.png, distances.png, ranked_lists.png, report.html (")
    metrics = json.loads((out / "metrics.json").read_text())
    distances = metrics["distances"]  # the figures behind distances.png, kept as numbers
    assert distances["pos_count"] > 0 and distances["neg_count"] > distances["pos_count"]
    assert 0.0 <= distances["overlap"] <= 1.0 and 0.0 <= distances["pos_mean"] <= 2.0
    page = parse(out / "report.html")
    expected = [f"{100 * metrics[key]:.1f}" for key in ("R1", "R5", "R10", "mAP", "mINP")]
    assert page.metric_rows[1] == ["synth-b", *expected]
    assert [decode_png(image["src"]) for image in page.images] == [
        (out / name).read_bytes() for name in ("cmc.png", "distances.png", "ranked_lists.png")]
    config = yaml.safe_load(page.pre_text)
    assert config["data"]["target_root"] == f"{tmp_path}/synth-b" and config["model"]["arch"] == "resnet18"

    def no_true_match(*args, **kwargs):
        raise ValueError("no query has a true match in the gallery; nothing to show")

    monkeypatch.setattr("reid.evaluation.plots.plot_ranked_lists", no_true_match)
    out = tmp_path / "no-ranked-lists"
    assert eval_main(eval_args(out)) == 0  # the metrics are good: a figure that cannot be drawn is no failure
    printed = capsys.readouterr()
    assert printed.out.strip().splitlines()[-1].startswith(
        f"wrote {out}/metrics.json, cmc.png, distances.png, report.html (")
    assert "warning: ranked lists (green frame: true match, red: false): not produced: no query" in printed.err
    assert "not produced (no query has a true match in the gallery; nothing to show)" in (
        out / "report.html").read_text(encoding="utf-8")
    assert len(parse(out / "report.html").images) == 2


# ------------------------------------------------------------------------------------------- headless Chromium
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = (1500, 1900)  # wide enough for the two plots side by side, tall enough to hold every figure
# Test-only: after load, write each image's decoded size and on-page box into the DOM for --dump-dom to show.
PROBE = """<script>
window.addEventListener("load", () => {
  const boxes = Array.from(document.images, (img) => {
    const box = img.getBoundingClientRect();
    return {alt: img.alt, complete: img.complete, naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
            left: box.left + window.scrollX, top: box.top + window.scrollY, width: box.width, height: box.height};
  });
  const probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify(boxes);
  document.body.appendChild(probe);
});
</script>"""


def find_browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"no headless browser found (looked for {', '.join(BROWSERS)} on PATH); "
                "apt-get install chromium to run this test")


def run_browser(binary: str, profile: Path, page: Path, *mode: str, timeout: float = 60.0) -> tuple[str, str]:
    """Run the browser headless and offline on ``page``; (stdout, stderr). Kills its whole process group on
    timeout, so no renderer is left behind on a loaded machine."""
    command = [binary, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
               "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
               "--force-device-scale-factor=1", f"--window-size={WINDOW[0]},{WINDOW[1]}",
               "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: any network fetch would fail
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
               "--virtual-time-budget=10000", *mode, page.resolve().as_uri()]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env={**os.environ, "HOME": str(profile)})
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{binary} did not finish within {timeout:.0f} s: {' '.join(command)}")
    assert process.returncode == 0, f"{binary} exited with {process.returncode}:\n{stderr[-3000:]}"
    return stdout, stderr


def test_report_renders_every_figure_in_headless_chromium(report: Path, figures: dict[str, Path],
                                                         tmp_path: Path) -> None:
    binary = find_browser()
    probed = tmp_path / "probed.html"  # a test-only copy; the report itself has no script
    probed.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "\n</body>"), encoding="utf-8")
    dom, log = run_browser(binary, tmp_path / "profile-dom", probed, "--dump-dom")
    assert "<title>gds-reid evaluation on synth-b</title>" in dom and '<table class="metrics">' in dom
    assert "Uncaught" not in log, log
    assert '<pre id="probe">' in dom, "the probe did not run: " + log[-2000:]
    boxes = json.loads(dom.split('<pre id="probe">', 1)[1].split("</pre>", 1)[0].replace("&quot;", '"'))
    assert [box["alt"] for box in boxes] == list(CAPTIONS)
    for box, path in zip(boxes, figures.values()):
        with Image.open(path) as source:
            assert box["complete"] and (box["naturalWidth"], box["naturalHeight"]) == source.size, box
            assert (box["width"], box["height"]) == source.size, box  # drawn at its own size, not scaled
        assert box["left"] + box["width"] <= WINDOW[0] and box["top"] + box["height"] <= WINDOW[1], box

    screenshot = tmp_path / "report.png"
    _, log = run_browser(binary, tmp_path / "profile-shot", report, f"--screenshot={screenshot}")
    assert "Uncaught" not in log, log
    with Image.open(screenshot) as shot:
        pixels = np.asarray(shot.convert("RGB")).astype(np.int16)
    assert pixels.shape == (WINDOW[1], WINDOW[0], 3)
    assert pixels.std() > 20  # not a blank page
    for box, path in zip(boxes, figures.values()):
        left, top = round(box["left"]), round(box["top"])
        region = pixels[top:top + round(box["height"]), left:left + round(box["width"])]
        with Image.open(path) as source:
            expected = np.asarray(source.convert("RGB")).astype(np.int16)
        assert (region < 245).any(axis=2).mean() > 0.02, f"{box['alt']}: blank where the figure should be"
        # the figure's own pixels are on screen, where the DOM says (colour handling may shift values a little)
        assert np.abs(region - expected).mean() < 4, box["alt"]
