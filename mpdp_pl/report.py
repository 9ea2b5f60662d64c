"""``python -m mpdp_pl.report PATH...``: the report of runs and grids (:mod:`mpdp_pl.experiments.report`)."""

import sys

from .experiments.report import main

if __name__ == "__main__":
    sys.exit(main())
