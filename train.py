#!/usr/bin/env python
"""Entry point: ``python train.py --env Humanoid-v4`` (see ``--help``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from a checkout without installing

from mpdp_pl.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
