"""Execute every example notebook top to bottom with nbclient; exit non-zero on any cell error.

By default notebooks run in quick mode (``NOISY_PML_QUICK=1``: less data, fewer epochs) and the
files are left untouched. ``--full`` runs them in full mode; ``--write`` saves the executed
notebooks (with their outputs) back to ``examples/``: that is how the committed outputs are made::

    python scripts/execute_notebooks.py                      # CI: quick mode, check only
    NOISY_PML_DATA=/path/to/data python scripts/execute_notebooks.py --full --write

The kernel runs the Python interpreter executing this script (a kernel spec pointing at
``sys.executable`` is written to a temporary folder), so the notebooks see the same environment,
whether or not a ``python3`` kernel is registered. ``NOISY_PML_DATA`` (folder holding ``cub/``)
is passed through; without it the notebooks use the bundled digits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _kernel_dir() -> str:
    """A Jupyter data dir holding a ``python3`` kernel spec that runs ``sys.executable``."""
    data_dir = tempfile.mkdtemp(prefix="noisy_pml_kernels_")
    spec_dir = Path(data_dir) / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return data_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebook files (default: examples/*.ipynb)")
    parser.add_argument("--full", action="store_true", help="full mode (NOISY_PML_QUICK=0)")
    parser.add_argument("--write", action="store_true", help="save outputs into the notebooks")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    args = parser.parse_args(argv)

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    paths = [Path(p) for p in args.notebooks] or sorted(EXAMPLES.glob("*.ipynb"))
    if not paths:
        print(f"no notebooks found in {EXAMPLES}", file=sys.stderr)
        return 1
    os.environ["NOISY_PML_QUICK"] = "0" if args.full else "1"
    # the notebooks import noisy_pml from this checkout even when it is not pip-installed
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [_kernel_dir(), *filter(None, [os.environ.get("JUPYTER_PATH")])]
    )
    # no progress bars from PML's trainers and testers in the saved outputs
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    mode = "full" if args.full else "quick"
    print(f"executing {len(paths)} notebook(s) in {mode} mode, "
          f"NOISY_PML_DATA={os.environ.get('NOISY_PML_DATA', '(unset: digits)')}")
    failed = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(
            nb,
            timeout=args.timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        )
        start = time.perf_counter()
        try:
            client.execute()
        except CellExecutionError as err:
            failed.append(path.name)
            print(f"FAILED {path.name} after {time.perf_counter() - start:.0f} s\n{err}",
                  file=sys.stderr)
            continue
        print(f"ok     {path.name} in {time.perf_counter() - start:.0f} s", flush=True)
        if args.write:
            for cell in nb.cells:  # execution times are noise in a diff
                cell.get("metadata", {}).pop("execution", None)
            nbformat.write(nb, path)
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
