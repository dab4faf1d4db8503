"""The book as a reader sees it: built offline with one command, then every page opened in headless
Chromium (Debian's, driven by Playwright) at 1280 px and at a 390 px phone's width: no console errors,
every formula typeset by the bundled MathJax (no raw $...$, \\frac or \\mathbb left in the visible
text), every image loaded, previous/next links and a notebook to download on every tutorial page, no
printed line cut off, no page wider than the phone, and nothing that says it ran in quick mode.
Slow suite. Screenshots go to $MINIVAE_SCREENSHOTS if set."""

import functools
import http.server
import os
import re
import shutil
import sys
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
RAW_MATH = re.compile(r"\$[^$\n]{1,80}\$|\\frac|\\mathbb|\\mathcal|\\log\b|\\sum\b")


@pytest.fixture(scope="module")
def book():
    pytest.importorskip("myst_nb", reason="the docs extra is not installed: pip install -e '.[docs]'")
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import build
    finally:
        sys.path.pop(0)
    return build.build()


@pytest.fixture(scope="module")
def server(book):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(book))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed (apt install chromium)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def pages(book):
    names = ["index.html", "NOTATION.html", "exercises.html"]
    return names + sorted(p.name for p in book.glob("[0-9][0-9]_*.html"))


def test_the_book_has_every_tutorial(book):
    assert len(list(book.glob("[0-9][0-9]_*.html"))) == 8
    assert len(list(book.glob("[0-9][0-9]_*.ipynb"))) == 8


def test_every_page_in_a_real_browser(book, server, browser):
    shots = os.environ.get("MINIVAE_SCREENSHOTS")
    for name in pages(book):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors, outside = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(server) else None)
        page.goto(server + name, wait_until="load")
        if page.evaluate("() => !!document.querySelector('script[src*=mathjax]')"):  # pages with math
            page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
            page.evaluate("() => MathJax.startup.promise")
        formulas = page.evaluate("() => document.querySelectorAll('mjx-container').length")
        visible = page.evaluate("""() => { const b = document.body.cloneNode(true);
            b.querySelectorAll('pre, code, script, style, mjx-container, .highlight').forEach(e => e.remove());
            return b.innerText; }""")
        images = page.evaluate("() => Array.from(document.images).map(i => [i.src, i.complete && i.naturalWidth])")
        assert not errors, (name, errors)
        assert not outside, (name, "fetched from outside the book", outside)
        raw = RAW_MATH.findall(visible)
        assert not raw, (name, "formulas left untypeset", raw[:5])
        assert all(width > 0 for _, width in images), (name, [s for s, w in images if not w])
        if name[:2].isdigit():
            assert formulas > 0 and len(images) >= 1, name
            links = page.evaluate("() => Array.from(document.querySelectorAll('a[href$=\".ipynb\"]'))"
                                  ".map(a => a.getAttribute('href'))")
            assert any(link.endswith(name.replace(".html", ".ipynb")) for link in links), (name, links)
            assert all(page.request.get(server + link.lstrip("./")).ok for link in links), links
            prev_next = page.evaluate("() => [!!document.querySelector('a.left-prev'), "
                                      "!!document.querySelector('a.right-next')]")
            assert prev_next[0] or prev_next[1], name
        for text in ("QUICK MODE", "[full run only]", "does NOT hold"):
            assert text not in page.inner_text("body"), (name, text)
        cut = page.evaluate("""() => Array.from(document.querySelectorAll('div.cell_output pre'))
            .filter(p => p.scrollWidth > p.clientWidth + 1).map(p => p.innerText.slice(0, 80))""")
        assert not cut, (name, "printed lines cut off", cut[:3])
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(shots) / name.replace(".html", ".png")), full_page=False)
        print(f"{name}: {formulas} formulas typeset, {len(images)} images loaded, no console errors")
        page.close()


def test_every_page_fits_a_phone(book, server, browser):
    """At 390 px no page scrolls sideways: display math scrolls in its own box, figures shrink."""
    shots = os.environ.get("MINIVAE_SCREENSHOTS")
    for name in pages(book):
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto(server + name, wait_until="load")
        if page.evaluate("() => !!document.querySelector('script[src*=mathjax]')"):
            page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
            page.evaluate("() => MathJax.startup.promise")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 391, (name, f"{width} px wide on a 390 px screen")
        if shots:
            page.screenshot(path=str(Path(shots) / ("phone-" + name.replace(".html", ".png"))), full_page=False)
        page.close()


def test_code_that_is_not_the_lesson_is_folded_away(book):
    """Tutorial 1's diagram code (40 lines of matplotlib patches) sits behind a toggle."""
    html = (book / "01_model_and_elbo.html").read_text()
    assert "hide-input" in html and "FancyBboxPatch" in html
