"""The docs render what the package says: Markdown docstrings, math and pages served offline.

Docstrings are Google style written in Markdown (math as ``$...$`` / ``$$...$$`` for
``pymdownx.arithmatex``, cross-references as ``[`Name`][]``); reST roles would show up verbatim in
the API reference. The built-site checks run ``mkdocs build --strict`` once (skipped where the docs
extra is not installed).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

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
