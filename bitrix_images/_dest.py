"""
The names of a download's temporary files (pure): ``.bxi-<host>-<pid>-<random>.part``.

Downloads write under such a name beside their target, then rename it into place. A run
killed with SIGKILL (or a power cut) leaves its file behind; the jobs (``sync.dest``)
remove those of this host whose process is gone, and leave alone those of a live process
or of another host sharing the folder (NFS, shards). The rule lives here, below both the
download code and the jobs, so that neither imports the other.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from typing import Final

__all__ = ["HOST", "TEMP_NAME", "TEMP_SUFFIX", "temp_prefix"]


def _host_tag() -> str:
    # Four hex digits of the host name: short, and enough to tell the hosts of one shared
    # folder apart (a collision only means a stale file is left for its own host to remove).
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:4]


HOST: Final = _host_tag()
TEMP_SUFFIX: Final = ".part"
# Group 1 is the host tag, group 2 the pid.
TEMP_NAME: Final = re.compile(r"\.bxi-([0-9a-f]{4})-([0-9]{1,7})-[a-z0-9_]{8}\.part")


def temp_prefix() -> str:
    """The start of this process's temporary names (read per call: a fork has a new pid)."""
    return f".bxi-{HOST}-{os.getpid()}-"
