"""Scoring where radiologists work: a DICOM node (``sitefusion listen``) that receives studies
from a PACS or a modality, scores each series with the batch scorer and sends the DICOM SRs
back by C-STORE or STOW-RS.

Needs the optional extra ``pacs`` (pynetdicom, dicomweb-client).
"""

from sitefusion.pacs.destinations import (
    AeAddress,
    Destination,
    DimseDestination,
    SendError,
    StowDestination,
    check_ae_title,
    load_credentials,
    parse_ae_address,
)
from sitefusion.pacs.inbox import Inbox
from sitefusion.pacs.ledger import SentLedger
from sitefusion.pacs.node import ListenNode, NodeSettings

__all__ = [
    "AeAddress",
    "Destination",
    "DimseDestination",
    "Inbox",
    "ListenNode",
    "NodeSettings",
    "SendError",
    "SentLedger",
    "StowDestination",
    "check_ae_title",
    "load_credentials",
    "parse_ae_address",
]
