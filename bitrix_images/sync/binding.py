"""
Which portal a mirror's folder belongs to, and what a run against another one may do.

The manifest (``manifest``) is keyed by image id, and image ids are a portal's own: a
staging portal and its production copy give one image the same id and other bytes. So
the manifest records the portal it was written for (``Binding``): its host and, when the
client knows it, the ``member_id`` that Bitrix24's OAuth answers carry
(settings/oauth/auto-renewal.md: the portal's id), never anything derived from the
credential, so a rotated webhook needs nothing. The host alone, not its port: a portal
is a host name, and ``mirror --demo`` serves its portal on a new loopback port each run
(two portals on two ports of one host are the one case this does not tell apart).

``judge`` is the rule, pure: the same portal goes on; another one is refused with both
hosts named (``PortalMismatch``) unless the caller asked to rebind; the same ``member_id``
under a new host (a renamed portal) rebinds itself with a notice. A rebind raises the
binding's ``generation``: a manifest row written under an older generation is not trusted
by id any more, and its file is fetched again and compared by hash (``mirror``), until a
run records it anew (a rebind stopped half-way is finished by the next run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from .._wire.auth import OAuthAuth
from ..exceptions import PortalMismatch

if TYPE_CHECKING:
    from ..client import BitrixClient

__all__ = ["Binding", "Portal", "judge", "portal_of"]


@attrs.frozen
class Portal:
    """The portal a client talks to: its host, and its ``member_id`` when known."""

    host: str
    member_id: str | None = None


@attrs.frozen
class Binding:
    """The portal a manifest was written for, and the generation of rows it trusts."""

    host: str
    member_id: str | None = None
    generation: int = 0


def portal_of(client: BitrixClient) -> Portal:
    """
    The client's portal: the host of its origin and, for an OAuth client that has
    refreshed its tokens in this process, the ``member_id`` the OAuth server answered
    with (a webhook client never learns it).
    """
    host = client.origin.host or ""
    auth = client._caller.auth
    member = auth.grantee[0] if isinstance(auth, OAuthAuth) and auth.grantee else None
    return Portal(host, member if isinstance(member, str) and member else None)


def judge(
    bound: Binding | None, here: Portal, *, rebind: bool, where: str
) -> tuple[Binding, str | None]:
    """
    The binding a run against *here* goes on with, and a notice to print (or ``None``).

    *bound* is what the manifest holds (``None``: a new manifest, or one an earlier
    version wrote: bound now, silently). *where* names the folder in the messages. Raises
    ``PortalMismatch`` for another portal, unless *rebind*.
    """
    if bound is None:
        return Binding(here.host, here.member_id), None
    same_member = bound.member_id is not None and bound.member_id == here.member_id
    other_member = (
        bound.member_id is not None
        and here.member_id is not None
        and bound.member_id != here.member_id
    )
    if rebind:
        fresh = Binding(here.host, here.member_id, bound.generation + 1)
        notice = (
            f"{where} was mirrored from {bound.host}; bound now to {here.host}: "
            "every file is fetched again and compared"
        )
        return fresh, notice
    if bound.host == here.host and not other_member:
        # The member_id learned once is kept; a client that does not know it is no other.
        return attrs.evolve(bound, member_id=bound.member_id or here.member_id), None
    if bound.host != here.host and same_member:
        notice = (
            f"the portal of {where} moved from {bound.host} to {here.host} "
            "(same member_id); bound to the new host"
        )
        return attrs.evolve(bound, host=here.host), notice
    why = "another portal" if bound.host != here.host else "another portal's member_id"
    raise PortalMismatch(
        f"{where} mirrors {bound.host}, not {here.host} ({why}); mirror into another "
        f"folder, or pass --rebind (rebind=True) to mirror {here.host} into it and fetch "
        "every file again",
        bound=bound.host,
        host=here.host,
    )
