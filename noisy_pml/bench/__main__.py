"""``python -m noisy_pml.bench [options]``: same as ``noisy-pml bench [options]``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
