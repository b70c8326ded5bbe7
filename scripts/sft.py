"""The script `accelerate launch` runs: `sft.py --config recipes/<name>.yaml [--field value ...]`.

Kept thin on purpose (as in alignment-handbook and open-r1): `reversal_hf.train.main` parses the arguments with
`reversal_hf.configs.parse_recipe` (one `trl.TrlParser` parse) and runs the `SFTTrainer`.
"""

import sys

from reversal_hf.train import main

if __name__ == "__main__":
    sys.exit(main())
