"""Hydra plugins of ``train.py -m`` (mpdp_pl/experiments/multirun.py; Hydra finds plugins in the
``hydra_plugins`` namespace): the sweeper ``hydra/sweeper=mpdp_grid``, which launches the jobs the
grid planned, and the default launcher ``hydra/launcher=mpdp_pool``."""
