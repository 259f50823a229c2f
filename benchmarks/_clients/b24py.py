"""
b24pysdk (sync, requests): ``client.call_batches([...product_image.list(pid)...])``.

Its REST base URL is hard-coded as ``https://{domain}/rest``
(``b24pysdk/api/callers/call_method.py``, ``_MethodCaller._base_url``); ``prepare`` replaces
that property in this process only with one that says ``http://``, which is the whole
adaptation (domain ``127.0.0.1:PORT``, webhook token ``1/<code>``).
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from . import Job, Tally, image_shape


def prepare(job: Job) -> Any:
    caller = importlib.import_module("b24pysdk.api.callers.call_method")
    caller._MethodCaller._base_url = property(lambda self: f"http://{self._domain}/rest")
    return None


def run(job: Job, state: Any, tally: Tally) -> dict[str, Any]:
    from b24pysdk import BitrixWebhook, Client

    parts = urlsplit(job.url)
    user, code = parts.path.strip("/").split("/")[1:3]
    client = Client(BitrixWebhook(domain=parts.netloc, webhook_token=f"{user}/{code}"))
    requests = [client.catalog.product_image.list(p) for p in job.product_ids()]
    answer = client.call_batches(requests).result
    if answer.result_error:
        raise RuntimeError(f"b24pysdk: {len(answer.result_error)} commands failed")
    images = image_shape(answer.result)
    tally.add_all([image["id"] for image in images])
    return {"held": len(images)}
