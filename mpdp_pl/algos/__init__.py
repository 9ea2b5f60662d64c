"""One LightningModule per algorithm, all on the shared loop of :mod:`.base`."""

from .ddpg import DDPG
from .dhmbpo import DHMBPO
from .m2ac import M2AC
from .mbpo import MBPO
from .mpdp import MPDP
from .mpdp_dh import MPDPOnDHMBPO
from .mpdp_plan_value import MPDPPlanValue
from .mppve import MPPVE
from .pets import PETS
from .poplin import POPLINA, POPLINP
from .sac import SAC

# mpdp_paper: MPDP's Algorithm 2 as printed (conf/algo/mpdp_paper.yaml, a preset of mpdp);
# mpdp_pv: MPDP on MPPVE's plan-value critic (conf/algo/mpdp_pv.yaml, a preset of mppve);
# mpdp_dh: MPDP's parts on DHMBPO (conf/algo/mpdp_dh.yaml, a preset of dhmbpo)
ALGOS = {"ddpg": DDPG, "dhmbpo": DHMBPO, "m2ac": M2AC, "mbpo": MBPO, "mpdp": MPDP, "mpdp_dh": MPDPOnDHMBPO, "mpdp_paper": MPDP,
         "mpdp_pv": MPDPPlanValue, "mppve": MPPVE, "pets": PETS, "poplin_a": POPLINA, "poplin_p": POPLINP, "sac": SAC}
