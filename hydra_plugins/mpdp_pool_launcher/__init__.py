"""Hydra launcher plugin ``hydra/launcher=mpdp_pool`` (Hydra finds plugins in the
``hydra_plugins`` namespace): the default launcher of ``train.py -m`` (mpdp_pl/experiments/multirun.py)."""
