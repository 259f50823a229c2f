"""
Benchmarks of ``bitrix_images`` against its peers, on an embedded portal in its own process.

``python -m benchmarks`` runs the full suite (and rewrites the table in ``RESULTS.md``);
``python -m benchmarks --quick`` runs the same workloads scaled down, in under a minute.
Every client runs in a process of its own; the portal (``bitrix_images.testing.FakePortal``)
runs in another (``benchmarks._portal_proc``) and is asked for its request counters after
each client run. See ``RESULTS.md`` for the method and the latest figures.
"""
