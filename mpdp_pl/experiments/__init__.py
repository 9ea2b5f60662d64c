"""Many runs and their reports: grids (``train.py -m``), results, statistics, the report."""
