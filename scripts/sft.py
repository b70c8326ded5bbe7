"""The script `accelerate launch` runs: `sft.py --config recipes/<name>.yaml [--field value ...]`.

Kept thin on purpose (as in alignment-handbook): everything lives in `reversal_hf.train`.
"""

import sys

from reversal_hf.train import main

if __name__ == "__main__":
    sys.exit(main())
