"""What an interaction gains on the way in: country from the address (offline GeoIP data
shipped with geoip2fast) and browser/OS/device from the user agent (ua-parser)."""

from __future__ import annotations

from functools import lru_cache

from geoip2fast import GeoIP2Fast
from ua_parser import parse as parse_user_agent

from services.tracking.domain import Agent, device_class


class Enricher:
    def __init__(self) -> None:
        self._geo = GeoIP2Fast(verbose=False)
        self.agent("Mozilla/5.0")  # ua-parser loads its rules lazily; pay that at start-up

    @lru_cache(maxsize=65536)  # noqa: B019 - one Enricher per process, lives as long as it
    def country(self, ip: str) -> str | None:
        try:
            code = self._geo.lookup(ip).country_code
        except Exception:  # noqa: BLE001 - an unparseable peer address has no country
            return None
        return code if len(code) == 2 and code.isalpha() else None

    @lru_cache(maxsize=8192)  # noqa: B019 - as above: one Enricher per process
    def agent(self, user_agent: str) -> Agent:
        if not user_agent:
            return Agent(None, None, "unknown")
        parsed = parse_user_agent(user_agent)
        browser = parsed.user_agent.family if parsed.user_agent else None
        os_family = parsed.os.family if parsed.os else None
        device_family = parsed.device.family if parsed.device else ""
        return Agent(browser, os_family, device_class(user_agent, device_family, os_family or ""))
