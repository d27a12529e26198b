"""A study's report opened in a real headless browser: Debian's chromium driven by playwright.

The browser is the system's (``executable_path``; ``.ci/run`` installs the ``chromium`` package with apt-get
when it is missing); playwright never downloads one here. The test skips, saying why, where there is no
playwright, no chromium, or chromium cannot start.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from secateurs.analysis import FunctionMetric, study

pytestmark = pytest.mark.usefixtures("one_thread")
#: What a study without training data, blocks or latency draws.
FIGURE_FILES = ("curves.png", "histograms.png", "layer_sparsity.png", "sensitivity.png", "pareto.png")


@pytest.fixture(scope="module")
def chromium() -> str:
    """The system's chromium, found before any report is built (or the reason the test skips)."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no chromium on PATH: apt-get install chromium (.ci/run does it); playwright's own browsers are never downloaded")
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    reference = model(x).detach()
    metric = FunctionMetric(lambda m: float((m(x).argmax(1) == reference.argmax(1)).float().mean() * 100),
                            name="agreement", unit="%")
    out = tmp_path_factory.mktemp("browser") / "study"
    study(model, metric, example_inputs=(x[:2],), methods=["l1", "random:channel"], amounts=(0.3, 0.7), latency=False,
          out_dir=out, quiet=True)
    return out


def test_the_report_renders_in_chromium_without_errors(chromium, report):
    executable = chromium
    from playwright.sync_api import Error, sync_playwright

    problems: list[str] = []
    requests: list[str] = []
    try:
        with sync_playwright() as driver:
            arguments = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
            try:
                browser = driver.chromium.launch(executable_path=executable, args=arguments)
            except Error as exc:
                pytest.skip(f"chromium at {executable} does not start: {str(exc).splitlines()[0]}")
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda message: message.type in ("error", "warning") and problems.append(message.text))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto((report / "report.html").as_uri(), wait_until="load")
            widths = page.evaluate("Array.from(document.images).map(image => image.complete ? image.naturalWidth : 0)")
            scripts = page.evaluate("document.scripts.length")
            shot = page.screenshot(full_page=True)
            browser.close()
    except Error as exc:  # the driver itself failing to start is an environment problem, not the report's
        pytest.skip(f"playwright could not drive chromium: {str(exc).splitlines()[0]}")
    assert not problems, problems
    assert len(widths) == len(FIGURE_FILES) and all(width > 0 for width in widths), widths
    assert scripts == 0
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert pixel_spread(shot) > 100, "the screenshot is blank"


def pixel_spread(png: bytes) -> float:
    """The variance of the screenshot's grey levels: near zero for a blank page."""
    from PIL import Image

    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64).var())


def test_the_report_embeds_every_figure_it_drew(report):
    assert sorted(path.name for path in (report / "figures").glob("*.png")) == sorted(FIGURE_FILES)
    page = (report / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == len(FIGURE_FILES) and "<script" not in page
