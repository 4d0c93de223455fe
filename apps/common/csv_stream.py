"""Streaming CSV downloads (the desk's trades, a lab run's trades): formula-safe text cells, and a sync iterator of
chunks handed to ASGI one chunk per thread hop."""

from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async


class Echo:
    """csv.writer wants a file; this one hands each formatted line straight back."""

    def write(self, value: str) -> str:
        return value


def csv_text(value: str) -> str:
    # Spreadsheet formula injection: a text cell starting with = + - @ is run as a formula by Excel.
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


async def aiter_batches(batches: Iterator[str]) -> AsyncIterator[str]:
    """Under ASGI a sync iterator would be read whole into memory by Django; pull chunk by chunk instead."""
    while True:
        chunk = await sync_to_async(next)(batches, None)  # a sentinel: StopIteration cannot cross a Future
        if chunk is None:
            return
        yield chunk
