"""``python -m orchestration``: prepare the Dagster home and print it.

``make dev`` runs ``DAGSTER_HOME=$(python -m orchestration) dg dev`` (or ``dagster dev``), so the
UI, the daemon and the demo share one instance under ``Settings.dagster_home``. Bad settings
stop it with the same one-line-per-problem message as the command line (exit code 2).
"""

import sys

from orchestration import prepare_dagster_home
from sonolake.settings import BadSettings, get_settings

try:
    home = prepare_dagster_home(get_settings())
except BadSettings as exc:
    sys.stderr.write(f"error: {exc}\n")
    sys.exit(2)
sys.stdout.write(f"{home}\n")
