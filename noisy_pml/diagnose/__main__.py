"""``python -m noisy_pml.diagnose``: see `noisy_pml.diagnose.cli.main`."""

from .cli import main

raise SystemExit(main())
