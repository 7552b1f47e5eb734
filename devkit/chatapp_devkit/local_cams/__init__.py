"""A local stand-in for the CAMS SendChatappMassMessage API: real HTTP on loopback, ACS3 signature
verification, per-key sliding-window rate limit (calls counted when they arrive), seeded fault injection and a ledger of every call.

``LocalCams`` runs it as a subprocess; ``LocalCamsServer`` runs it in a thread of this process.
"""

from chatapp_devkit.local_cams.auth import ACTION, VERSION, Account
from chatapp_devkit.local_cams.faults import FAULT_KINDS, Faults
from chatapp_devkit.local_cams.params import MAX_RECIPIENTS
from chatapp_devkit.local_cams.process import LocalCams
from chatapp_devkit.local_cams.server import LocalCamsServer

__all__ = ["ACTION", "FAULT_KINDS", "MAX_RECIPIENTS", "VERSION", "Account", "Faults", "LocalCams", "LocalCamsServer"]
