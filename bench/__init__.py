"""``python -m bench``: the service's performance figures, measured in one run on this machine.

The mock Kafka broker (``chatapp_devkit.mockcluster``) and the local CAMS endpoint
(``chatapp_devkit.local_cams``) run in processes of their own, the service in its own process(es)
(``python -m consumer run``), and this process only produces, reads and measures.
See bench/README.md for what each figure means.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("chatapp_devkit") is None:  # not installed (pip install -e ./devkit): this checkout's
    sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "devkit"))
