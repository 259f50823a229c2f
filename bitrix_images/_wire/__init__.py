"""
The wire layer: pure rules, no I/O and no event loop.

The REST protocol (``protocol``), the cattrs converter (``converters``), webhook and OAuth
auth (``auth``), argument checks (``validate``), the client-side limits' arithmetic
(``limits``), the counters (``stats``), file naming (``naming``), the clock and sleep seam
(``clock``) and the id sources' one helper (``ids``). Everything above builds on these.
"""
