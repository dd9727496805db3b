"""Settings of the gateway process."""

from libs.settings import Settings


class GatewaySettings(Settings):
    pass


SETTINGS_CLASS = GatewaySettings
