"""A local stand-in for the CAMS SendChatappMassMessage API: real HTTP on loopback, ACS3 signature
verification, per-key sliding-window rate limit (calls counted when they arrive), seeded fault injection and a ledger of every call,
and, given a callback URL, delivery receipts (ChatAppStatus) pushed for accepted calls as CAMS pushes them.

``LocalCams`` runs it as a subprocess; ``LocalCamsServer`` runs it in a thread of this process.
"""

from chatapp_devkit.local_cams.auth import ACTION, VERSION, Account
from chatapp_devkit.local_cams.faults import FAULT_KINDS, Faults
from chatapp_devkit.local_cams.params import MAX_RECIPIENTS
from chatapp_devkit.local_cams.process import LocalCams
from chatapp_devkit.local_cams.receipt_settings import ERROR_CODES, ReceiptSettings
from chatapp_devkit.local_cams.server import LocalCamsServer

__all__ = [
    "ACTION",
    "ERROR_CODES",
    "FAULT_KINDS",
    "MAX_RECIPIENTS",
    "VERSION",
    "Account",
    "Faults",
    "LocalCams",
    "LocalCamsServer",
    "ReceiptSettings",
]
