import uvicorn
from prometheus_client import start_http_server

from libs import logs, tracing
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    tracing.configure("gateway")
    logs.configure(service="gateway", level=settings.log_level, redaction_key=settings.jwt_key)
    if settings.gateway_metrics_port:
        start_http_server(settings.gateway_metrics_port, addr=settings.bind_host)
    uvicorn.run(
        tracing.asgi_middleware(create_app(settings)),
        host=settings.bind_host,
        port=settings.gateway_port,
        log_level="warning",
        # The C event loop and HTTP parser: with asyncio's and h11's pure Python the server
        # itself cost more CPU per request than the transcoding (py-spy, gateway.vs_envoy).
        loop="uvloop",
        http="httptools",
        access_log=False,  # the gateway logs one line per request itself
        # The gateway walks X-Forwarded-For itself, against LOOM_TRUSTED_PROXIES.
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        # HTTPS when LOOM_TLS_CERT_FILE/KEY_FILE are set; browsers present no client certificate.
        ssl_certfile=settings.tls_cert_file,
        ssl_keyfile=settings.tls_key_file,
    )


main()
