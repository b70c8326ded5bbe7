"""Build the Experiment 1 dataset: `python datasets_scripts/build_exp1.py --source {paper,generate} --output DIR`."""

import sys

from reversal_hf.data.exp1 import main

if __name__ == "__main__":
    sys.exit(main())
