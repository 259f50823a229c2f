"""
The jobs that keep a folder and a catalog in step: ``mirror`` (portal to folder) and
``upload`` (folder to portal), both on one frame (``frame``).

Built on the public SDK (``BitrixClient``, ``Images``); nothing below this package
imports it, and the command line (``bitrix_images.cli``) sits on top of it.
"""

from .events import FileEvent
from .ids import catalog_ids
from .mirror import MirrorResult, mirror
from .upload import UploadResult, upload

__all__ = ["FileEvent", "MirrorResult", "UploadResult", "catalog_ids", "mirror", "upload"]
