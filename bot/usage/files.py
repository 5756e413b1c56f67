"""Reading an export file without blocking the event loop, and downloading one that was dropped into a chat."""

from __future__ import annotations

import asyncio
import multiprocessing
from queue import Empty
from itertools import islice
from pathlib import Path
from typing import Any, AsyncIterator, Callable
from urllib.parse import urlsplit

import aiohttp

from ..settings import is_loopback
from .rows import BadRow, UsageRow

#: A dropped export larger than this is refused (a year of a large tenant's calls zips to far less).
MAX_EXPORT_BYTES = 200 * 1024 * 1024
#: Rows parsed per step in a worker thread.
STEP = 2000


class ExportReaderDied(Exception):
    """The child process parsing an export ended without finishing (killed, out of memory)."""


class DownloadError(Exception):
    """The file could not be fetched; the message is for the person who dropped it."""


async def download(session: aiohttp.ClientSession, url: str, dest: Path, *,
                   max_bytes: int = MAX_EXPORT_BYTES) -> int:
    """Stream `url` into `dest` (https only, or http to a loopback host); returns the bytes written."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname or "")):
        raise DownloadError("the file's download link is not https")
    written = 0
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=300), allow_redirects=True) as response:
            if response.status != 200:
                raise DownloadError(f"Teams answered {response.status} when I fetched the file")
            with dest.open("wb") as out:
                async for block in response.content.iter_chunked(1 << 16):
                    written += len(block)
                    if written > max_bytes:
                        raise DownloadError(f"the file is larger than {max_bytes // (1024 * 1024)} MB")
                    out.write(block)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise DownloadError(f"the file could not be downloaded ({type(exc).__name__})") from None
    return written


async def export_rows(path: Path) -> AsyncIterator[UsageRow | BadRow]:
    """`csv_export.read_export(path)`, parsed in a worker thread a step at a time so that turns go on meanwhile.
    `ExportError` surfaces at the first step."""
    from .csv_export import read_export

    rows = read_export(path)
    while True:
        step = await asyncio.to_thread(lambda: list(islice(rows, STEP)))
        if not step:
            return
        for row in step:
            yield row


def _parse_in_child(path: str, queue: Any, step: int) -> None:
    """The child process's whole job: read the export and send its rows in pickled steps; then None. An
    `ExportError` (or anything else) is sent instead, to be raised in the parent."""
    from .csv_export import read_export

    consumed = 0

    def count(n: int) -> None:
        nonlocal consumed
        consumed += n

    try:
        rows = read_export(Path(path), progress=count)
        while True:
            step_rows = list(islice(rows, step))
            if not step_rows:
                break
            queue.put((step_rows, consumed))
            consumed = 0
        queue.put(None)
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        queue.put(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))


async def export_rows_in_a_process(path: Path, *, progress: Callable[[int], None] | None = None,
                                   step: int = STEP) -> AsyncIterator[UsageRow | BadRow]:
    """Like `export_rows`, but parsed by a child process, so that parsing (about half of an import's CPU) runs
    on another core while this one records. At most 8 steps wait in the queue (memory stays bounded); the child
    is stopped if the reader stops early."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue(maxsize=8)
    child = context.Process(target=_parse_in_child, args=(str(path), queue, step), daemon=True)
    child.start()
    try:
        while True:
            try:
                item = await asyncio.to_thread(queue.get, True, 1.0)
            except Empty:
                if not child.is_alive():   # killed, or could not even start: never wait forever
                    raise ExportReaderDied(f"the process reading {path.name} ended without finishing "
                                           f"(exit code {child.exitcode})") from None
                continue
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            step_rows, consumed = item
            if progress is not None and consumed:
                progress(consumed)
            for row in step_rows:
                yield row
    finally:
        if child.is_alive():
            child.terminate()
        await asyncio.to_thread(child.join, 5)
        queue.close()


def export_rows_for(ledger: Any, path: Path, *, progress: Callable[[int], None] | None = None
                    ) -> AsyncIterator[UsageRow | BadRow]:
    """The faster way to feed `ledger` (measured, bench/usage_import.py): a backend that records in its own
    thread (TinyDB) overlaps with parsing on the loop already, and a child process would only add unpickling
    there; a backend that records on the loop (PostgreSQL) gains a core from parsing in a child process."""
    if getattr(ledger, "works_off_the_loop", False):
        return _iterate(path, progress)
    return export_rows_in_a_process(path, progress=progress)


async def _iterate(path: Path, progress: Callable[[int], None] | None) -> AsyncIterator[UsageRow | BadRow]:
    from .csv_export import read_export

    for row in read_export(path, progress=progress):
        yield row
