"""The docs render what the package says: Markdown docstrings, math and pages served offline.

Docstrings are Google style written in Markdown (math as ``$...$`` / ``$$...$$`` for
``pymdownx.arithmatex``, cross-references as ``[`Name`][]``); reST roles would show up verbatim in
the API reference. The built-site checks run ``mkdocs build --strict`` once (skipped where the docs
extra is not installed).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "noisy_pml"

# reST roles and directives the Markdown renderer would print as text
REST = re.compile(
    r":(?:py:)?(?:math|class|func|meth|attr|data|mod|obj|exc|ref):`|^\s*\.\. \w+::", re.M
)


def _docstrings(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield getattr(node, "name", path.stem), getattr(node, "lineno", 1), doc


def test_rest_pattern_finds_the_roles_it_is_meant_to_find():
    assert REST.search("see :class:`Foo`")
    assert REST.search(r"with :math:`x^2`")
    assert REST.search("Text.\n\n    .. math::\n\n        x = 1\n")
    assert not REST.search(r"see [`Foo`][] with $x^2$ and ``code``")


def test_no_docstring_under_noisy_pml_uses_rest_roles():
    found = [
        f"{path.relative_to(ROOT)}:{line} ({name}): {REST.search(doc).group(0).strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, line, doc in _docstrings(path)
        if REST.search(doc)
    ]
    assert not found, (
        "reST roles in docstrings (write Markdown: $x$, $$...$$, [`Name`][]; "
        "scripts/convert_rest_docstrings.py converts them):\n" + "\n".join(found)
    )


# ---------------------------------------------------------------------------------------------
# the built site


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """``mkdocs build --strict`` of this checkout (skipped without the docs extra)."""
    for module in ("mkdocs", "mkdocstrings", "mkdocs_jupyter", "mathjax"):
        pytest.importorskip(module, reason='needs the docs extra (pip install ".[docs]")')
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-5000:]}"
    return out


def _pages(site: Path) -> list[Path]:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 20, f"only {len(pages)} pages built"
    return pages


# hosts that serve math renderers, fonts or front-end libraries
CDN = re.compile(
    r"(?:fonts\.googleapis\.com|fonts\.gstatic\.com|cdn\.jsdelivr\.net|unpkg\.com|cdnjs\."
    r"|polyfill\.io|mathjax\.org)",
    re.I,
)
# anything a page loads by itself: scripts, stylesheets, preconnects, images, fonts, imports
REMOTE_LOAD = re.compile(
    r"<(?:script|img|iframe|source)\b[^>]*\bsrc=[\"']?(?:https?:)?//"
    r"|<link\b(?=[^>]*\brel=[\"']?(?:stylesheet|preconnect|preload|modulepreload|dns-prefetch|icon))"
    r"[^>]*\bhref=[\"']?(?:https?:)?//"
    r"|@import\s+(?:url\()?[\"']?(?:https?:)?//|url\([\"']?(?:https?:)?//|import\([\"']https?://",
    re.I,
)


def test_no_page_loads_anything_from_the_network(site):
    offenders = []
    for path in [*_pages(site), *site.rglob("*.css")]:
        text = path.read_text(errors="replace")
        for match in [*REMOTE_LOAD.finditer(text), *CDN.finditer(text)]:
            start = max(match.start() - 60, 0)
            offenders.append(f"{path.relative_to(site)}: ...{text[start : match.end() + 60]}...")
    assert not offenders, "pages load from the network:\n" + "\n".join(offenders[:20])


def test_remote_load_pattern_catches_cdn_tags():
    assert REMOTE_LOAD.search('<script src="https://unpkg.com/mathjax@3/es5/tex-mml-chtml.js">')
    assert REMOTE_LOAD.search('<link rel="preconnect" href="https://fonts.gstatic.com">')
    assert REMOTE_LOAD.search("@import url(https://fonts.googleapis.com/css?family=Roboto)")
    assert REMOTE_LOAD.search('<link href="https://cdn.example.org/x.css" rel="stylesheet">')
    assert not REMOTE_LOAD.search('<a href="https://github.com/noisy-pml/noisy-pml">')
    assert not REMOTE_LOAD.search('<link rel="canonical" href="https://noisy-pml.github.io/">')
    assert not REMOTE_LOAD.search('<script src="../assets/mathjax/tex-mml-chtml.js">')


def test_math_renderer_is_served_by_the_site(site):
    page = (site / "api" / "losses" / "index.html").read_text()
    scripts = re.findall(r'<script src="([^"]+)"', page)
    mathjax = [s for s in scripts if s.endswith("mathjax/tex-mml-chtml.js")]
    assert mathjax, f"no MathJax script on the losses page: {scripts}"
    assert (site / "api" / "losses" / mathjax[0]).resolve().is_file()
    fonts = site / "assets" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
    assert len(list(fonts.glob("*.woff"))) > 10


def test_no_raw_rest_in_the_built_html(site):
    raw = re.compile(r":math:|\.\. math::|:class:`|:func:`|:meth:`")
    found = [
        f"{p.relative_to(site)}: {m.group(0)}"
        for p in _pages(site)
        for m in raw.finditer(p.read_text(errors="replace"))
    ]
    assert not found, "raw reST in the built site:\n" + "\n".join(found[:20])


def test_docstring_formulas_reach_the_api_reference_as_math(site):
    page = (site / "api" / "losses" / "index.html").read_text()
    anchor = page.index('id="noisy_pml.losses.smooth_proxy_anchor_loss.SmoothProxyAnchorLoss"')
    body = page[anchor:]
    display = re.search(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', body, re.S)
    assert display and r"\frac{1}{|P^+|}" in display.group(1)
    assert r'<span class="arithmatex">\(S(c)=\sigma(k(c-\mu))\)</span>' in body


def test_notebooks_are_rendered_with_their_committed_outputs(site):
    for nb in sorted((ROOT / "examples").glob("*.ipynb")):
        page = site / "examples" / nb.stem / "index.html"
        assert page.is_file(), f"{nb.name} is not in the site"
        html = page.read_text()
        assert "jp-Notebook" in html and "jp-OutputArea-output" in html, nb.name
    results = (site / "examples" / "04_benchmark_results" / "index.html").read_text()
    assert "data:image/png;base64" in results  # the committed plots, not a re-execution


def test_results_page_renders_the_committed_plots_and_claims_tables(site):
    page = (site / "results" / "index.html").read_text()
    assert "<!-- claims:" not in page
    tables = re.findall(r"<table>.*?</table>", page, re.S)
    markers = (ROOT / "docs" / "results.md").read_text().count("<!-- claims:")
    assert markers >= 3  # the frozen CUB / Cars196 grids and the fine-tuned ones
    assert len(tables) == markers and all("Smooth PA vs Proxy-Anchor" in t for t in tables)
    images = re.findall(r'<img[^>]*src="([^"]+r1_vs_noise\.png)"', page)
    assert len(images) == 3
    for src in images:
        assert (site / "results" / src).resolve().is_file(), src


def test_formulas_typeset_in_a_headless_browser(site):
    """Chromium, with every host but localhost unreachable, typesets each formula."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docs_screenshots as shots
    finally:
        sys.path.pop(0)
    browser = shots.find_browser()
    if browser is None:
        pytest.skip("no Chromium: apt-get install chromium to run the browser check")
    with shots.serve(site) as base:
        for page, _ in shots.PAGES:
            dom = shots.dump_dom(browser, base + page)
            typeset = dom.count("<mjx-container")
            marked = dom.count('class="arithmatex"')
            assert typeset >= marked > 0, f"{page}: {typeset} of {marked} formulas typeset"
            assert "<mjx-merror" not in dom, f"{page}: MathJax reported a TeX error"


def test_readme_links_are_absolute_so_they_work_on_pypi():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme) + re.findall(r'(?:src|href)="([^"]+)"', readme)
    relative = [t for t in targets if not re.match(r"https?://|mailto:|#", t)]
    assert targets and not relative, f"relative links in README.md (broken on PyPI): {relative}"
