import uvicorn

from libs import logs
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    logs.configure(service="gateway", level=settings.log_level, redaction_key=settings.jwt_key)
    uvicorn.run(
        create_app(settings),
        host=settings.bind_host,
        port=settings.gateway_port,
        log_level="warning",
        # The gateway walks X-Forwarded-For itself, against LOOM_TRUSTED_PROXIES.
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )


main()
