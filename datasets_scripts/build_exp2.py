"""Build the `reversal-exp2` dataset folder: a thin wrapper over `reversal_hf.data.exp2` (`--help` for options)."""

import sys

from reversal_hf.data.exp2 import main

if __name__ == "__main__":
    sys.exit(main())
