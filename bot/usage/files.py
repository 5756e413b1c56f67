"""Reading an export file without blocking the event loop, and downloading one that was dropped into a chat."""

from __future__ import annotations

import asyncio
from itertools import islice
from pathlib import Path
from typing import AsyncIterator
from urllib.parse import urlsplit

import aiohttp

from ..settings import is_loopback
from .rows import BadRow, UsageRow

#: A dropped export larger than this is refused (a year of a large tenant's calls zips to far less).
MAX_EXPORT_BYTES = 200 * 1024 * 1024
#: Rows parsed per step in a worker thread.
STEP = 2000


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
