"""One LightningModule per algorithm, all on the shared loop of :mod:`.base`."""

from .sac import SAC

ALGOS = {"sac": SAC}
