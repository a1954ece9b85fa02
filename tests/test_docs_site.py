"""The built documentation site renders in a real browser: headless Chromium opens the home page, a topic page and an
API page from a local HTTP server (every other host unreachable), and each must show its own heading and generated
content in the DOM, and a screenshot that is not blank. Also: no page of the site loads anything from another host (fonts, scripts, styles).

Outside the default suite (marker ``docs``): ``make docs-check`` builds the site, installs Debian's ``chromium`` if
it is missing, and runs this. Screenshots are kept in ``out/docs-screenshots/``.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.docs

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "site"
SHOTS = REPO / "out" / "docs-screenshots"

#: page -> texts its rendered DOM must hold (its heading, and something only the build can have put there)
PAGES = {
    "index.html": ['<h1 id="textenv">textenv', "What is in the box", 'href="lm-agents.html"'],
    "lm-config.html": ["LM agent settings", "GRPOConfig", "<code>num_generations</code>", "<code>kl_coef</code>"],
    "cli.html": ["Command line", "textenv train-rm", "<code>--help-agent</code>"],
    "api/agents-lm.html": ["agents.lm.GRPOTrainer", "agents.lm.GRPOConfig", "Callback"],
}


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("no chromium on PATH: `apt-get install -y chromium` (make docs-check does it)")
    return found


@pytest.fixture(scope="module")
def site_url() -> Iterator[str]:
    if not (SITE / "index.html").is_file():
        pytest.fail("the site is not built: run `make docs` first (make docs-check does it)")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def run_chromium(*args: str) -> subprocess.CompletedProcess:
    # every host but the local server unreachable: the pages must render offline
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
               "--window-size=1280,1000", "--virtual-time-budget=5000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_renders_in_chromium(page, site_url):
    url = f"{site_url}/{page}"
    dom = run_chromium("--dump-dom", url).stdout
    missing = [text for text in PAGES[page] if text not in dom]
    assert not missing, f"{page}: the rendered DOM lacks {missing}"
    built = (SITE / page).read_text(encoding="utf-8")
    if "<pre" in built:  # Material's JavaScript ran: it adds a copy button to each code block (not in the HTML)
        assert "data-clipboard-target" not in built, f"{page}: copy buttons already in the built HTML"
        assert "data-clipboard-target" in dom, f"{page}: Material's JavaScript did not run"

    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / (page.replace("/", "_").replace(".html", ".png"))
    shot.unlink(missing_ok=True)
    run_chromium(f"--screenshot={shot}", url)
    assert shot.is_file(), f"{page}: chromium wrote no screenshot"

    from PIL import Image, ImageStat

    image = Image.open(shot).convert("L")
    assert image.size == (1280, 1000)
    stddev = ImageStat.Stat(image).stddev[0]
    dark = sum(image.histogram()[:128]) / (image.size[0] * image.size[1])
    assert stddev > 20 and 0.01 < dark < 0.6, f"{page}: the screenshot looks blank (stddev {stddev:.1f}, dark {dark:.3f})"


def test_no_page_loads_from_another_host():
    assert (SITE / "index.html").is_file(), "run `make docs` first"
    external = re.compile(r"""<(?:link|script|img)\b[^>]*\b(?:href|src)=["'](?:https?:)?//""", re.IGNORECASE)
    offenders = {
        str(path.relative_to(SITE)): external.findall(path.read_text(encoding="utf-8"))[:3]
        for path in SITE.rglob("*.html")
        if external.search(path.read_text(encoding="utf-8"))
    }
    assert not offenders, f"pages that load from another host: {offenders}"
