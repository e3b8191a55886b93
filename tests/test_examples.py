"""The example notebooks are kept as pairs: a reviewable jupytext source and the executed notebook.

``examples/NN_name.py`` (jupytext percent format, linted by ruff) holds every cell;
``examples/NN_name.ipynb`` holds the same cells with the outputs of a committed run. After editing
either one, ``jupytext --sync examples/NN_name.py`` brings the other in line (outputs are kept).
"""

from __future__ import annotations

from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext", reason='needs the notebooks extra (jupytext)')

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def _cells(nb) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in nb.cells]


def test_every_notebook_has_its_paired_source_and_back():
    assert NOTEBOOKS, f"no notebooks in {EXAMPLES}"
    sources = sorted(p for p in EXAMPLES.glob("*.py"))
    assert [p.stem for p in sources] == [p.stem for p in NOTEBOOKS]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_and_source_hold_the_same_cells(notebook: Path):
    ipynb = jupytext.read(notebook)
    source = jupytext.read(notebook.with_suffix(".py"), fmt="py:percent")
    assert ipynb.metadata.get("jupytext", {}).get("formats") == "ipynb,py:percent"
    pairs = zip(_cells(ipynb), _cells(source), strict=False)
    for k, (a, b) in enumerate(pairs):
        assert a == b, (
            f"cell {k} differs between {notebook.name} and its .py source; run "
            f"`jupytext --sync {notebook.with_suffix('.py').relative_to(EXAMPLES.parent)}`"
        )
    assert len(ipynb.cells) == len(source.cells), f"{notebook.name}: cell counts differ"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_keeps_the_outputs_of_a_complete_run(notebook: Path):
    code = [c for c in jupytext.read(notebook).cells if c.cell_type == "code"]
    assert code and all(c.get("outputs") is not None for c in code)
    assert sum(bool(c.outputs) for c in code) >= len(code) // 2, "outputs were stripped"
    counts = [c.execution_count for c in code if c.source.strip()]
    assert all(counts) and counts == sorted(counts), "not executed top to bottom in one run"
