"""Fetching a venue's exchangeInfo filters on their own (the client loads them at start too)."""

from __future__ import annotations

import aiohttp

from worker.core.venue_filters import EXCHANGE_INFO_PATH, VenueFilters, VenueFiltersError, parse_exchange_info


async def load_venue_filters(base_url: str, timeout_s: float = 5.0) -> dict[str, VenueFilters]:
    """Fetches `exchangeInfo` (unsigned, weight 20) and parses its filters; raises on any failure,
    so a worker does not start trading on a grid it could not check."""
    url = base_url.rstrip("/") + EXCHANGE_INFO_PATH
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(url) as response,
        ):
            status = response.status
            info = await response.json(content_type=None) if status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise VenueFiltersError(f"GET {url}: {type(exc).__name__}: {exc}") from None
    if status != 200:
        raise VenueFiltersError(f"GET {url}: HTTP {status}")
    if not isinstance(info, dict):
        raise VenueFiltersError(f"GET {url}: not a JSON object")
    return parse_exchange_info(info)
