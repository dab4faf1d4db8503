"""Sphinx configuration of the minivae book (built by docs/build.py, which stages the sources)."""

project = "minivae"
author = "the minivae developers"
extensions = ["myst_nb", "sphinx-mathjax-offline", "sphinx_copybutton"]  # mathjax-offline: hyphens
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 2               # links such as NOTATION.md#references
nb_execution_mode = "off"            # the notebooks ship executed (docs/build.py runs the stale ones)
nb_merge_streams = True              # a table printed line by line reads as one block
exclude_patterns = ["_build", "_downloads_extra", "conf.py"]
html_theme = "sphinx_book_theme"     # the executable-book layout: previous/next, download, copy buttons
html_title = "minivae: a VAE from scratch"
html_extra_path = ["_downloads_extra"]   # the .ipynb files, next to the pages
html_static_path = ["_static"]
html_css_files = ["minivae.css"]
templates_path = ["_templates"]
html_theme_options = {
    "use_download_button": True,       # the page's notebook (.ipynb), and print to PDF
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_context = {"default_mode": "light"}   # one colour scheme (the figures are drawn for it)
html_show_sourcelink = True            # the download button offers the source notebook
html_copy_source = True
copybutton_exclude = ".linenos, .gp, .go"   # copy the code, not prompts or printed output
suppress_warnings = ["mystnb.unknown_mime_type"]
# The live figures come as inlined HTML (their JavaScript and numbers in the page); the Jupyter widget
# views are dropped from the saved notebooks, and never rendered here (their manager loads from a CDN).
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
nb_ipywidgets_js = {}
