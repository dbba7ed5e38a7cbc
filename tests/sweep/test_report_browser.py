"""report.html in a real browser: headless Chromium loads the page from disk, offline.

Chromium's own command line (no driver library): `--dump-dom` gives the page after its load
event, `--screenshot` what a user sees. The page has no script and forbids one; for the
check, a copy gets a probe script (and a policy allowing only inline script) that writes
what the browser rendered (rows, each image's natural size, page width) into the DOM.
The screenshot is kept under the test's tmp directory and its path printed.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opro.sweep.page import CSP
from opro.sweep.report import write_reports

from .conftest import HALF

INSTALL = "apt-get update && apt-get install -y chromium"
WIDTH = 1280
PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "opro-probe";
  out.textContent = JSON.stringify({
    rows: [...document.querySelectorAll("table.main tbody tr")].map(r => r.dataset.task),
    images: [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]),
    pageWidth: document.documentElement.scrollWidth,
    viewport: window.innerWidth,
  });
  document.body.appendChild(out);
});
</script></body>"""


def _chromium(binary: str, tmp_path: Path, *args: str) -> str:
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", *args,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _rendered(binary: str, page: Path, tmp_path: Path) -> dict[str, Any]:
    text = page.read_text(encoding="utf-8")
    assert text.count(CSP) == 1 and text.count("</body>") == 1
    probe = tmp_path / "probe.html"
    probe.write_text(
        text.replace(CSP, f"{CSP}; script-src 'unsafe-inline'").replace("</body>", PROBE),
        encoding="utf-8",
    )
    dom = _chromium(binary, tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="opro-probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    result: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return result


@pytest.mark.requires_extra("matplotlib")
def test_the_page_renders_in_chromium(
    half_sweep: Path, tmp_path: Path, program: Callable[[str, str], str]
) -> None:
    binary = program("chromium", INSTALL)
    written = write_reports(half_sweep)
    page = half_sweep / "report.html"
    result = _rendered(binary, page, tmp_path)
    assert result["rows"] == sorted(e["task"] for e in HALF)  # one row per task
    images = result["images"]
    assert len(images) == sum(p.suffix == ".png" for p in written) == 4
    assert all(complete and w > 0 and h > 0 for complete, w, h in images), images
    assert result["pageWidth"] <= result["viewport"], result  # wide tables scroll in place

    shot = tmp_path / "report.png"
    _chromium(binary, tmp_path, f"--window-size={WIDTH},2400", f"--screenshot={shot}",
              page.as_uri())  # fmt: skip
    print(f"screenshot: {shot}")
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[1] == WIDTH
    ink = (pixels[..., :3].min(axis=-1) < 0.9).mean()  # share of pixels that are not white
    assert ink > 0.02, f"the screenshot {shot} is nearly blank"
