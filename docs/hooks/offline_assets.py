"""MkDocs hook: serve the math renderer from the site itself and render the example notebooks.

- MathJax 3 is copied at build time from the installed ``django-static-mathjax`` package (a
  plain copy of MathJax's ``es5`` build, in the ``docs`` extra) to ``assets/mathjax/``, so the
  built site typesets formulas with no network: ``mkdocs.yml`` loads
  ``assets/mathjax/tex-mml-chtml.js`` after ``javascripts/mathjax.js`` (its configuration).
- The example notebooks (``examples/*.ipynb``, committed with their outputs) are added to the site
  as ``examples/<name>.ipynb`` before mkdocs-jupyter looks at the files, so it renders them
  without executing them; the paired ``.py`` sources stay out of the site.
- The CDN ``<script>`` tags that nbconvert's template puts in every notebook page (MathJax 2,
  mermaid) are dropped: the site's own MathJax typesets the notebooks' Markdown cells too.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
MATHJAX_DEST = "assets/mathjax"
# the parts of MathJax's es5 build that the tex-mml-chtml component loads (on demand included)
MATHJAX_PARTS = (
    "tex-mml-chtml.js", "input", "output/chtml", "output/chtml.js", "ui", "a11y", "sre"
)
# what nbconvert's template adds to every notebook page: MathJax 2 from a CDN and its
# configuration, and a module script importing mermaid from a CDN (the notebooks draw no diagram)
NB_CDN_SCRIPTS = re.compile(
    r'<script src="https?://[^"]*mathjax[^"]*">\s*</script>'
    r'|<script type="text/x-mathjax-config">.*?</script>'
    r'|<script type="module">(?:(?!</script>).)*?mermaid(?:(?!</script>).)*</script>',
    re.I | re.S,
)


def mathjax_root() -> Path:
    """Folder of the installed MathJax ``es5`` build (raises with the fix when absent)."""
    spec = importlib.util.find_spec("mathjax")
    if spec is None or spec.origin is None:
        raise PluginError(
            "MathJax is not installed: the docs serve it from the django-static-mathjax package; "
            'install the docs extra (pip install -e ".[docs]")'
        )
    es5 = Path(spec.origin).parent / "static" / "mathjax" / "es5"
    if not (es5 / "tex-mml-chtml.js").is_file():
        raise PluginError(f"no MathJax es5 build in {es5} (expected tex-mml-chtml.js there)")
    return es5


@event_priority(100)  # before mkdocs-jupyter's on_files, so it converts the added notebooks
def on_files(files, config):
    es5 = mathjax_root()
    for part in MATHJAX_PARTS:
        src = es5 / part
        for path in sorted(src.rglob("*") if src.is_dir() else [src]):
            if path.is_file():
                rel = path.relative_to(es5).as_posix()
                files.append(
                    File.generated(config, f"{MATHJAX_DEST}/{rel}", abs_src_path=str(path))
                )
    for nb in sorted((ROOT / "examples").glob("*.ipynb")):
        files.append(
            File(
                nb.relative_to(ROOT).as_posix(),
                src_dir=str(ROOT),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files


def on_post_page(output, page, config):
    if page.file.src_uri.endswith(".ipynb"):
        output = NB_CDN_SCRIPTS.sub("", output)
    return output
