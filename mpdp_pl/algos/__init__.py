"""One LightningModule per algorithm, all on the shared loop of :mod:`.base`."""

from .mpdp import MPDP
from .sac import SAC

ALGOS = {"mpdp": MPDP, "sac": SAC}
