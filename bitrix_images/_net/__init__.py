"""
The network and disk layer: the one aiohttp client (``transport``), a download's file
(``files``) and the thread that commits finished downloads (``committer``).
"""
