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
    names = ["index.html", "NOTATION.html", "exercises.html", "teaching.html"]
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
        code_cut = page.evaluate("""() => Array.from(document.querySelectorAll('div.cell_input pre, div.highlight pre'))
            .filter(p => p.offsetParent && p.scrollWidth > p.clientWidth + 1).map(p => p.innerText.slice(0, 80))""")
        assert not code_cut, (name, "code lines cut off at 1280 px", code_cut[:3])
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(shots) / name.replace(".html", ".png")), full_page=False)
        print(f"{name}: {formulas} formulas typeset, {len(images)} images loaded, no console errors")
        page.close()


def test_every_page_fits_a_phone(book, server, browser):
    """At 390 px no page scrolls sideways: display math, wide tables and figures scroll in their own
    boxes (a table with a shadow at the hidden edge), a figure is not shrunk until its text is below
    8 px, and the previous/next links wrap inside the screen."""
    shots = os.environ.get("MINIVAE_SCREENSHOTS")
    for name in pages(book):
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto(server + name, wait_until="load")
        if page.evaluate("() => !!document.querySelector('script[src*=mathjax]')"):
            page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
            page.evaluate("() => MathJax.startup.promise")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 391, (name, f"{width} px wide on a 390 px screen")
        # figures: shown at 578 px or more (their text, 9 px at the 650 px column, stays >= 8 px), or
        # at their own size if smaller; a wider one scrolls inside its output box
        small = page.evaluate("""() => Array.from(document.querySelectorAll('div.cell_output img'))
            .filter(i => i.naturalWidth && i.getBoundingClientRect().width < Math.min(i.naturalWidth, 578) - 1)
            .map(i => [i.src.split('/').pop(), i.naturalWidth, Math.round(i.getBoundingClientRect().width)])""")
        assert not small, (name, "figures shrunk below legibility (name, natural, shown px)", small[:3])
        # the previous/next footer lies inside the screen
        footer = page.evaluate("""() => Array.from(document.querySelectorAll('.prev-next-area a'))
            .map(a => a.getBoundingClientRect()).map(r => [Math.round(r.left), Math.round(r.right)])""")
        assert all(left >= 0 and right <= 390 for left, right in footer), (name, footer)
        # a table wider than the column scrolls in its own box, with a shadow at the hidden edge:
        # at the scroll's start, with the table's text hidden, the box's right edge is darker than
        # its left edge
        boxes = page.query_selector_all(".pst-scrollable-table-container")
        for box in boxes:
            if not box.evaluate("b => b.scrollWidth > b.clientWidth + 1"):
                continue
            assert box.evaluate("b => getComputedStyle(b).overflowX") == "auto", name
            box.scroll_into_view_if_needed()
            r = box.bounding_box()
            assert r["x"] + r["width"] <= 391, (name, r)
            box.evaluate("b => { b.scrollLeft = 0; b.firstElementChild.style.visibility = 'hidden'; }")
            left, right = (mean_gray(page.screenshot(clip={"x": x, "y": r["y"], "width": 6,
                                                             "height": min(r["height"], 600)}))
                           for x in (r["x"], r["x"] + r["width"] - 6))
            box.evaluate("b => { b.firstElementChild.style.visibility = ''; }")
            assert right < left - 8, (name, "no visible cue that the table scrolls", left, right)
        if shots:
            page.screenshot(path=str(Path(shots) / ("phone-" + name.replace(".html", ".png"))), full_page=False)
        page.close()


def mean_gray(png: bytes) -> float:
    """The mean brightness (0-255) of a screenshot."""
    import io

    import numpy as np
    from PIL import Image
    gray = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.int64)  # not getdata: gone in Pillow 14
    return int(gray.sum()) / max(1, gray.size)


def page_bytes(book, name) -> int:
    """A page and the images it shows (the theme's shared scripts and fonts not counted)."""
    html = (book / name).read_text()
    images = set(re.findall(r'src="(_images/[^"]+)"', html))
    return (book / name).stat().st_size + sum((book / i).stat().st_size for i in images)


def test_every_page_is_under_2_mb(book):
    sizes = {name: page_bytes(book, name) for name in pages(book)}
    print(", ".join(f"{n}: {s / 1e6:.2f} MB" for n, s in sizes.items()))
    assert max(sizes.values()) < 2_000_000, sizes


def test_code_that_is_not_the_lesson_is_folded_away(book):
    """Tutorial 1's diagram code (40 lines of matplotlib patches) sits behind a toggle."""
    html = (book / "01_model_and_elbo.html").read_text()
    assert "hide-input" in html and "FancyBboxPatch" in html


# --- the live figures: the same JavaScript as in Jupyter, checked against the library's numbers ----

def _figure_of(page, kind: str) -> dict:
    """The numbers a live figure's page carries (exported by minivae.widgets)."""
    import json
    key = page.evaluate(f"() => document.querySelector('.minivae-{kind}').id")
    return json.loads(page.evaluate(f"() => document.getElementById('{key}-figure').textContent"))


def _open_from_disk(browser, book, name, width=1280):
    page = browser.new_page(viewport={"width": width, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto((book / name).as_uri(), wait_until="load")     # the built book opened from disk
    return page, errors


def _canvas(page, selector) -> str:
    return page.evaluate(f"() => document.querySelector('{selector}').toDataURL()")


def test_the_elbo_identity_moves_with_q_and_matches_the_quadrature(book, browser):
    from minivae import widgets
    shots = os.environ.get("MINIVAE_SCREENSHOTS")
    name = "01_model_and_elbo.html"
    page, errors = _open_from_disk(browser, book, name)
    el = page.wait_for_selector(".minivae-elbo-identity")
    el.scroll_into_view_if_needed()
    figure = _figure_of(page, "elbo-identity")
    worst = 0.0
    for i, (mu, logvar) in [(0, tuple(figure["q"][0])), (1, tuple(figure["q"][1])), (2, (1.5, -7.0)), (0, (-2.9, -0.2))]:
        browser_terms = page.evaluate(f"() => document.querySelector('.minivae-elbo-identity').minivae.terms({i}, {mu}, {logvar})")
        worst = max(worst, max(abs(a - b) for a, b in zip(browser_terms, widgets.elbo_identity_terms(figure, i, mu, logvar))))
    # the tutorial's own 40001-point quadrature, printed on the page for the encoder's q of each image
    table = re.findall(r"^\s+(\d)\s+(-?\d+\.\d{10})\s+(-?\d+\.\d{10})\s+(\d+\.\d{10})\s", page.inner_text("body"), re.M)
    assert len(table) >= 3, "the page's table of log p(x), ELBO and KL"
    for row in table[:3]:
        i, printed = int(row[0]), [float(v) for v in row[1:]]
        at_encoder = page.evaluate(f"() => document.querySelector('.minivae-elbo-identity').minivae.terms({i}, "
                                   f"{figure['q'][i][0]}, {figure['q'][i][1]})")
        worst = max(worst, max(abs(a - b) for a, b in zip(at_encoder, printed)))
    assert worst < 1e-6, worst
    print(f"ELBO identity: browser vs library quadrature, worst difference {worst:.1e}")
    # a learner drags the mean slider: the curves, the bars and the numbers move, and stay true
    before, plot, bars = page.evaluate("() => document.querySelector('.minivae-elbo-identity').minivae.current()"), \
        _canvas(page, ".minivae-plot"), _canvas(page, ".minivae-bars")
    slider = page.query_selector(".minivae-elbo-identity input[type=range]").bounding_box()
    page.mouse.click(slider["x"] + 0.8 * slider["width"], slider["y"] + slider["height"] / 2)
    after = page.evaluate("() => document.querySelector('.minivae-elbo-identity').minivae.current()")
    assert after["mu"] != before["mu"] and after["kl"] > before["kl"]
    assert _canvas(page, ".minivae-plot") != plot and _canvas(page, ".minivae-bars") != bars
    want = widgets.elbo_identity_terms(figure, after["index"], after["mu"], after["logvar"])
    shown = [float(td.inner_text()) for td in page.query_selector_all(".minivae-elbo-identity .minivae-number")[:3]]
    assert max(abs(a - b) for a, b in zip(shown, want)) < 1e-6
    # "back to the encoder's q": exactly the encoder's q, not the slider's nearest step
    page.click(".minivae-elbo-identity button")
    back = page.evaluate("() => document.querySelector('.minivae-elbo-identity').minivae.current()")
    assert [back["mu"], back["logvar"]] == figure["q"][back["index"]], back
    want = widgets.elbo_identity_terms(figure, back["index"], *figure["q"][back["index"]])
    shown = [float(td.inner_text()) for td in page.query_selector_all(".minivae-elbo-identity .minivae-number")[:3]]
    assert max(abs(a - b) for a, b in zip(shown, want)) < 1e-6, (shown, want)
    assert not errors, errors
    if shots:
        el.screenshot(path=str(Path(shots) / "live-elbo-identity.png"))
    page.close()


def test_the_latent_explorer_decodes_in_the_browser_as_the_library_does(book, browser):
    import numpy as np
    import minivae
    from minivae import VAEConfig, widgets
    shots = os.environ.get("MINIVAE_SCREENSHOTS")
    name = "07_real_images.html"
    size = page_bytes(book, name)
    page, errors = _open_from_disk(browser, book, name)
    el = page.wait_for_selector(".minivae-latent-explorer")
    el.scroll_into_view_if_needed()
    figure = _figure_of(page, "latent-explorer")
    weights = [(widgets.array_of(layer["W"]), widgets.array_of(layer["b"])) for layer in figure["layers"]]
    cfg = VAEConfig(x_dim=weights[-1][0].shape[1], hidden=tuple(W.shape[1] for W, _ in weights[:-1]), z_dim=2)
    params = minivae.init_params(cfg, dtype="float32")
    for i, (W, b) in enumerate(weights[:-1]):
        params[f"dec.W{i}"], params[f"dec.b{i}"] = W, b
    params["dec.W_out"], params["dec.b_out"] = weights[-1]

    def library(z):
        return minivae.likelihood_mean(minivae.decode(params, np.asarray([z], dtype=np.float32), cfg), cfg)[0]

    worst = 0.0
    for z in ([0.0, 0.0], [1.3, -0.7], [-2.5, 2.5], [0.01, 3.9]):
        got = page.evaluate(f"() => document.querySelector('.minivae-latent-explorer').minivae.decode({z})")
        worst = max(worst, float(np.max(np.abs(np.asarray(got) - library(z)))))
    # the pointer: what is drawn follows it, and is the library's image at the pointer's z
    box = page.query_selector(".minivae-map").bounding_box()
    drawn = []
    for fx, fy in ((0.3, 0.4), (0.7, 0.6)):
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        shown = page.evaluate("() => document.querySelector('.minivae-latent-explorer').minivae.shown()")
        lo, hi = figure["z_range"]
        assert abs(shown["z"][0] - (lo + fx * (hi - lo))) < 0.05 and abs(shown["z"][1] - (hi - fy * (hi - lo))) < 0.05
        worst = max(worst, float(np.max(np.abs(np.asarray(shown["image"]) - library(shown["z"])))))
        drawn.append(_canvas(page, ".minivae-image"))
    assert drawn[0] != drawn[1], "moving the pointer did not change the decoded image"
    # two clicks: the path between them, eight images, each the library's
    for fx, fy in ((0.2, 0.2), (0.8, 0.8)):
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    path = page.evaluate("() => document.querySelector('.minivae-latent-explorer').minivae.path()")
    assert len(path) == 8
    for step in path:
        worst = max(worst, float(np.max(np.abs(np.asarray(step["image"]) - library(step["z"])))))
    assert worst < 1e-5, worst
    print(f"latent explorer: page with its images {size / 1e6:.2f} MB; browser vs minivae.decode (float32), worst {worst:.1e}")
    assert not errors, errors
    if shots:
        el.screenshot(path=str(Path(shots) / "live-latent-explorer.png"))
    page.close()


def test_without_javascript_the_live_figures_are_their_static_figures(book, browser):
    context = browser.new_context(java_script_enabled=False)
    for name in ("01_model_and_elbo.html", "07_real_images.html"):
        page = context.new_page()
        page.goto((book / name).as_uri(), wait_until="load")
        static = page.evaluate("() => Array.from(document.querySelectorAll('.minivae-static img'))"
                               ".map(i => i.complete && i.naturalWidth)")
        assert static and all(static), (name, static)
        assert "Run this cell to get the live figure" in page.inner_text(".minivae-static"), name
        page.close()
    context.close()


def test_the_teachers_page_reads_at_both_widths(book, server, browser):
    """The course page: its plan tables and its grading commands, at 1280 px and on a phone, where
    the wide tables scroll inside their own box and the page itself does not."""
    shots = os.environ.get("MINIVAE_SCREENSHOTS")
    for width in (1280, 390):
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(server + "teaching.html", wait_until="load")
        text = page.inner_text("body")
        for heading in ("Teaching with minivae", "What each tutorial teaches", "A four-week module, one class a week",
                        "A single 90-minute lab", "Grading a class", "On Gradescope", "In nbgrader or Otter-Grader"):
            assert heading in text, (width, heading)
        assert page.evaluate("() => document.querySelectorAll('table').length") == 3
        assert "python -m minivae.exercises grade submissions --out results" in text
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width + 1
        if width == 1280:  # the tables fit the column: nothing of them hidden behind a scroll
            cut = page.evaluate("() => Array.from(document.querySelectorAll('table'))"
                                ".filter(t => t.scrollWidth > t.parentElement.clientWidth + 1).length")
            assert cut == 0, cut
        links = page.evaluate("() => Array.from(document.querySelectorAll('table a')).map(a => a.getAttribute('href'))")
        assert len(links) == 8 and all(page.request.get(server + link.split("#")[0]).ok for link in links), links
        if shots:
            page.screenshot(path=str(Path(shots) / f"teaching-{width}.png"), full_page=False)
        page.close()
