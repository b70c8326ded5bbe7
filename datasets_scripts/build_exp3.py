"""Build the `reversal-exp3` dataset folder: a thin wrapper over `reversal_hf.data.exp3` (`--help` for options)."""

import sys

from reversal_hf.data.exp3 import main

if __name__ == "__main__":
    sys.exit(main())
