"""One LightningModule per algorithm, all on the shared loop of :mod:`.base`."""

from .mbpo import MBPO
from .mpdp import MPDP
from .mppve import MPPVE
from .sac import SAC

ALGOS = {"mbpo": MBPO, "mpdp": MPDP, "mppve": MPPVE, "sac": SAC}
