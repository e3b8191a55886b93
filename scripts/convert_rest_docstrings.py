"""Rewrite reST roles in noisy_pml's docstrings as the Markdown mkdocstrings renders (one-off).

The docs parse Google-style docstrings as Markdown with ``pymdownx.arithmatex``, so:

- ``:math:`x``` becomes ``$x$``;
- ``.. math:: x`` (inline or as an indented block) becomes a ``$$ ... $$`` display block, one
  block per blank-line-separated paragraph of the directive;
- ``:class:`~a.b.C``` / ``:func:`` / ``:meth:`` / ``:attr:`` / ``:data:`` / ``:mod:`` become an
  autorefs cross-reference, ``[`C`][a.b.C]`` or ``[`C`][]`` (resolved from the docstring's scope:
  ``scoped_crossrefs`` in mkdocs.yml), when the object is rendered in the API reference, else
  plain code (`` `C` ``).

Only docstrings change: the script checks that every file's syntax tree, docstrings removed, is
identical before and after. Run it from the repository root (``python
scripts/convert_rest_docstrings.py``); it is idempotent, so it can be re-run after merging a branch
that still has reST roles. ``tests/test_docs.py`` fails while any role is left.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "noisy_pml"

XREF = re.compile(r":(?:py:)?(class|func|meth|attr|data|mod|obj|exc):`(~?)([^`]+)`")
INLINE_MATH = re.compile(r":math:`([^`]+)`")
DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<rest>.*)$")


def _rendered_paths() -> set[str]:
    """Object paths the API reference renders (``::: path`` lines and their public members)."""
    paths: set[str] = set()
    for page in (ROOT / "docs" / "api").glob("*.md"):
        for line in page.read_text().splitlines():
            if line.startswith("::: "):
                paths.add(line[4:].strip())
    return paths


def _is_rendered(path: str, rendered: set[str]) -> bool:
    parts = path.split(".")
    if any(p.startswith("_") for p in parts):
        return False  # the API reference filters private members
    if not any(path == r or path.startswith(r + ".") for r in rendered):
        return False
    # mkdocstrings renders members with a docstring only (show_if_no_docstring: false)
    try:
        obj = _GRIFFE[parts[0]][".".join(parts[1:])] if len(parts) > 1 else _GRIFFE[path]
    except KeyError:
        return False
    return obj.is_module or obj.docstring is not None


def _resolve(name: str, module: str) -> str | None:
    """Canonical dotted path of ``name`` as seen from ``module`` (None if it cannot be found)."""
    candidates = [name]
    mod = importlib.import_module(module)
    head, _, tail = name.partition(".")
    if hasattr(mod, head):
        obj = getattr(mod, head)
        if tail:
            for attr in tail.split("."):
                obj = getattr(obj, attr, None)
        if obj is not None:
            owner = getattr(mod, head)
            canonical = getattr(owner, "__module__", module) or module
            if isinstance(owner, type) or callable(owner):
                base = f"{canonical}.{owner.__qualname__}"
                return base + ("." + tail if tail else "")
            return f"{module}.{name}"
    # a method or attribute of a class defined in this module (``:meth:`parse```)
    for value in vars(mod).values():
        if isinstance(value, type) and value.__module__ == module and hasattr(value, head):
            return f"{module}.{value.__qualname__}.{name}"
    for cand in candidates:
        parts = cand.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for attr in parts[i:]:
                obj = getattr(obj, attr, None)
            if obj is None:
                break
            if isinstance(obj, type) or callable(obj):
                mod_name = getattr(obj, "__module__", None)
                if mod_name and hasattr(obj, "__qualname__"):
                    return f"{mod_name}.{obj.__qualname__}"
            return cand
    return None


def _convert_xref(match: re.Match, module: str, rendered: set[str]) -> str:
    _, tilde, target = match.groups()
    target = target.strip().removesuffix("()")
    shown = target.rsplit(".", 1)[-1] if tilde else target
    path = _resolve(target, module)
    if not (path and _is_rendered(path, rendered)):
        return f"`{shown}`"
    # the docs resolve the name from the docstring's scope (mkdocstrings' scoped_crossrefs) and
    # public aliases to their canonical path, so the reference keeps the name as written
    return f"[`{shown}`][]" if shown == target else f"[`{shown}`][{target}]"


def _convert_directives(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = DIRECTIVE.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent = m.group("indent")
        body: list[str] = [m.group("rest")] if m.group("rest").strip() else []
        i += 1
        # the directive's body: blank lines and lines indented deeper than the directive
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)
        ):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():  # trailing blank lines stay outside
            body.pop()
            i -= 1
        while body and not body[0].strip():
            body.pop(0)
        # one $$ block per paragraph, continuation lines re-indented to the directive's level
        paragraphs: list[list[str]] = [[]]
        for line in body:
            if line.strip():
                paragraphs[-1].append(line.strip())
            elif paragraphs[-1]:
                paragraphs.append([])
        for k, para in enumerate(p for p in paragraphs if p):
            if k:
                out.append("")
            out.append(f"{indent}$$")
            out.extend(f"{indent}{line}" for line in para)
            out.append(f"{indent}$$")
    return out


def _wrap(lines: list[str], keep: set[str], width: int = 100) -> list[str]:
    """Break lines longer than ``width`` at the last space outside code, links and math.

    The continuation keeps the line's indentation (or the next line's, when that is deeper: the
    continuation of an ``Args:`` entry), or is two deeper after a list marker, so the Markdown
    renders the same. Lines in ``keep`` (unchanged by the conversion) are left alone.
    """
    out: list[str] = []
    for k, line in enumerate(lines):
        while len(line) > width and line not in keep:
            depth, breaks = 0, []
            for pos, ch in enumerate(line[:width]):
                if ch in "`$":
                    depth ^= 1 << "`$".index(ch)
                elif ch == "[":
                    depth |= 4
                elif ch == "]" and not line[pos + 1 : pos + 2] == "[":
                    depth &= ~4
                elif ch == " " and not depth and line[:pos].strip():
                    breaks.append(pos)
            if not breaks:
                break
            indent = len(line) - len(line.lstrip())
            nxt = lines[k + 1] if k + 1 < len(lines) else ""
            if line.lstrip()[:2] in ("- ", "* "):
                indent += 2
            elif nxt.strip() and len(nxt) - len(nxt.lstrip()) > indent:
                indent = len(nxt) - len(nxt.lstrip())
            out.append(line[: breaks[-1]])
            line = " " * indent + line[breaks[-1] + 1 :]
        out.append(line)
    return out


def convert_text(text: str, module: str, rendered: set[str]) -> str:
    lines = _convert_directives(text.split("\n"))
    text = "\n".join(lines)
    text = INLINE_MATH.sub(lambda m: f"${m.group(1).strip()}$", text)
    new = XREF.sub(lambda m: _convert_xref(m, module, rendered), text)
    if new == text:
        return new
    return "\n".join(_wrap(new.split("\n"), keep=set(text.split("\n"))))


def _without_docstrings(source: str) -> str:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body[0].value.value = ""
    return ast.dump(tree)


def _docstring_spans(source: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of every docstring literal in ``source``."""
    tree = ast.parse(source)
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    spans = []
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            c = body[0].value
            spans.append(
                (starts[c.lineno - 1] + c.col_offset, starts[c.end_lineno - 1] + c.end_col_offset)
            )
    return sorted(spans)


def convert_file(path: Path, rendered: set[str]) -> bool:
    source = path.read_text()
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    module = module.removesuffix(".__init__")
    pieces, last = [], 0
    for start, end in _docstring_spans(source):
        pieces.append(source[last:start])
        pieces.append(convert_text(source[start:end], module, rendered))
        last = end
    pieces.append(source[last:])
    new = "".join(pieces)
    if new == source:
        return False
    if _without_docstrings(new) != _without_docstrings(source):
        raise SystemExit(f"{path}: the conversion changed code, not only docstrings")
    path.write_text(new)
    return True


_GRIFFE: dict = {}


def main() -> int:
    import griffe

    sys.path.insert(0, str(ROOT))
    _GRIFFE["noisy_pml"] = griffe.load("noisy_pml", search_paths=[str(ROOT)])
    rendered = _rendered_paths()
    changed = [p for p in sorted(PACKAGE.rglob("*.py")) if convert_file(p, rendered)]
    for p in changed:
        print(f"converted {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
