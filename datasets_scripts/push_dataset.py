"""Push a built dataset folder and tag its version: `python datasets_scripts/push_dataset.py DIR --repo-id ORG/NAME
--revision v1.0.0 [--force] [--private]` (endpoint from `HF_ENDPOINT`, token from `HF_TOKEN`)."""

import sys

from reversal_hf.hub import main

if __name__ == "__main__":
    sys.exit(main())
