"""Sphinx configuration of the minivae book (built by docs/build.py, which stages the sources)."""

project = "minivae"
author = "the minivae developers"
extensions = ["myst_nb", "sphinx-mathjax-offline"]  # the package is named with hyphens
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 2               # links such as NOTATION.md#references
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
nb_execution_mode = "force"          # every tutorial runs at build time, in a Jupyter kernel
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True              # a table printed line by line reads as one block
source_suffix = {".md": "myst-nb", ".py": "myst-nb"}
exclude_patterns = ["_build", "_downloads_extra", "conf.py"]
html_theme = "alabaster"
html_title = "minivae: a VAE from scratch"
html_extra_path = ["_downloads_extra"]   # the .ipynb files, next to the pages
templates_path = ["_templates"]
html_sidebars = {"**": ["about.html", "download.html", "navigation.html", "searchbox.html"]}
html_theme_options = {"description": "a Variational Autoencoder written from scratch, every gradient checked",
                      "page_width": "1180px", "sidebar_width": "250px"}
html_show_sourcelink = False
suppress_warnings = ["mystnb.unknown_mime_type"]
