"""
The call layer: what one request, call or batch goes through.

``caller.Caller`` is the entry (call, batch, download); it paces each attempt
(``pacer``), refreshes OAuth tokens (``refresh``), runs one attempt loop for calls and
downloads (``attempts``) under the retry rules (``retry``), and ``batch`` turns commands
into per-command outcomes.
"""
