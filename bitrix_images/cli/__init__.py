"""
The ``bitrix-images`` command line (also ``python -m bitrix_images``): ``app`` runs it,
``parser`` and ``options`` read it, ``portal`` connects, ``commands`` do the work,
``output`` prints.
"""

from .app import main
from .portal import OAUTH_ENV, OAUTH_URL_ENV, REDIS_ENV, WEBHOOK_ENV

__all__ = ["OAUTH_ENV", "OAUTH_URL_ENV", "REDIS_ENV", "WEBHOOK_ENV", "main"]
