"""The ``upload`` job: a folder of photos onto the products, never twice."""

from .run import UploadResult, upload

__all__ = ["UploadResult", "upload"]
