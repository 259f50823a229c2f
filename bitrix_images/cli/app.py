"""
The ``bitrix-images`` command line (also ``python -m bitrix_images``).

``list``, ``get``, ``add``, ``delete`` and ``fields`` map one to one onto ``client.images``
and print JSON (``list``: one object per line); ``mirror`` downloads every image of many
products into local folders (``bitrix_images.mirror``) and ``upload`` adds a folder of
photos to the products (``bitrix_images.upload``): the command line is a thin layer over
both. The portal comes from ``--webhook`` /
``BITRIX_WEBHOOK_URL`` or the ``BITRIX_*`` OAuth variables; ``--redis`` /
``BITRIX_REDIS_URL`` shares its limits and tokens with other processes.

Expected failures (the portal's errors, bad arguments, files) end in one line on standard
error and exit status 1; usage errors exit 2. No line printed ever holds the webhook code,
a token or a signed download URL: messages are scrubbed of them, and URLs are cut to
their origin.

The chain: ``main`` parses and catches, ``execute`` opens what must be open before the
event loop starts, ``connected`` makes the client (or the demo portal) and runs the command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import IO

import attrs

from ..exceptions import BitrixError
from ..sync.ids import file_ids
from ..sync.terminal import PROG
from ..sync.upload.journal import LockedError
from .commands import Failed, run_command
from .interrupt import Interrupted, run_interruptible
from .options import (
    CommandOptions,
    CompletionOptions,
    MirrorOptions,
    UploadOptions,
    from_namespace,
)
from .output import error, plural, silence_stdout
from .parser import build_parser, parse
from .portal import Portal, PortalOptions, UsageError, coordinator, find_portal

__all__ = ["execute", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for usage errors, from argparse)."""
    parser = build_parser()
    if argv is None and "_ARGCOMPLETE" in os.environ:  # pragma: no cover -- a subprocess
        _complete(parser)
    secrets: list[str] = []
    try:
        command, options, given = from_namespace(parse(parser, argv))
        if isinstance(options, CompletionOptions):
            print(_completion_script(options.shell), end="")
            return 0
        demo = isinstance(options, MirrorOptions) and options.demo
        portal = None if demo else find_portal(given, os.environ)
        secrets = [] if portal is None else portal.secrets()
        return execute(command, options, given, portal)
    except UsageError as usage:
        parser.error(str(usage))
    except Interrupted as stop:
        print(f"{PROG}: interrupted ({stop})", file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, as other tools do.
        silence_stdout()
        return 1
    except (BitrixError, ValueError, TypeError, OSError, LockedError, Failed) as failure:
        return error(str(failure) or type(failure).__name__, secrets)


def _complete(parser: argparse.ArgumentParser) -> None:  # pragma: no cover
    """
    Answer the shell's completion request (argcomplete sets ``_ARGCOMPLETE``), and exit.

    Run only as the shell runs it, in a process of its own (tests/cli/test_cli_help.py):
    argcomplete writes to inherited descriptors and ends the process with ``os._exit``.
    """
    import argcomplete  # noqa: PLC0415 -- only a completion request needs it

    argcomplete.autocomplete(parser)


def _completion_script(shell: str) -> str:
    """The script that has *shell* complete ``bitrix-images`` from this parser."""
    from argcomplete.shell_integration import shellcode  # noqa: PLC0415

    return shellcode([PROG], shell=shell)


def execute(
    command: str, options: CommandOptions, given: PortalOptions, portal: Portal | None
) -> int:
    """Run one command to its end in a new event loop (``portal`` ``None``: the demo)."""
    with _products_file(options) as lines:
        return asyncio.run(run_interruptible(connected(command, options, given, portal, lines)))


def _products_file(options: CommandOptions) -> contextlib.AbstractContextManager[IO[str] | None]:
    """``mirror --products-file``, opened here and read one line at a time (``-``: stdin)."""
    if not isinstance(options, MirrorOptions) or options.products_file is None:
        return contextlib.nullcontext(None)
    path = options.products_file
    if str(path) == "-":
        return contextlib.nullcontext(sys.stdin)
    try:
        lines = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory, not a products file") from None
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    if path.is_file():
        # Counted for the bar, so read twice: a bad line is reported before any request.
        with _closed_on_error(lines):
            try:
                for _ in file_ids(lines, str(path)):
                    pass
            except UnicodeDecodeError:
                raise ValueError(f"{path} is not a text file of product ids") from None
            lines.seek(0)
    return lines


@contextlib.contextmanager
def _closed_on_error(lines: IO[str]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        lines.close()
        raise


async def connected(
    command: str,
    options: CommandOptions,
    given: PortalOptions,
    portal: Portal | None,
    lines: IO[str] | None,
) -> int:
    """Connect to the portal (through Redis, if given) and run the command."""
    if portal is None:
        assert isinstance(options, MirrorOptions)  # noqa: S101 -- only mirror has --demo
        return await _demo(options, given)
    concurrency = options.concurrency if isinstance(options, (MirrorOptions, UploadOptions)) else 0
    async with coordinator(portal.redis) as shared:
        sharing = () if shared is None else (shared,)
        async with portal.client(given.limit(concurrency), *sharing) as client:
            status = await run_command(client, command, options, sys.stdout, lines)
    if portal.rescued and status == 0:
        # The next run would start from the old refresh token, which no longer works: a
        # run that needs a hand before the next one is not a success (cron must see it).
        raise Failed(
            f"the refreshed OAuth tokens are in {portal.rescued[-1]}, not {portal.token_file}; "
            "move them there before the next run"
        )
    return status


async def _demo(options: MirrorOptions, given: PortalOptions) -> int:
    # Only the demo needs the embedded portal (and aiohttp.web): imported here, not above.
    from ..testing import DEMO_BURST, DEMO_RATE, demo_portal  # noqa: PLC0415

    async with demo_portal() as fake:
        catalog = fake.catalog
        if not options.output.quiet:
            print(
                f"demo: an embedded demo portal on loopback ({fake.origin.host}:{fake.port}) with "
                f"{plural(len(catalog.product_ids()), 'product')} and "
                f"{plural(catalog.image_count(), 'image')}; "
                "nothing leaves this machine",
                file=sys.stderr if options.output.json else sys.stdout,  # stdout: the JSON only
                flush=True,
            )
        options = attrs.evolve(options, iblock=catalog.iblock_id)
        given = attrs.evolve(given, rate=given.rate or DEMO_RATE, burst=given.burst or DEMO_BURST)
        portal = Portal(webhook=str(fake.webhook_url))
        return await connected("mirror", options, given, portal, None)
