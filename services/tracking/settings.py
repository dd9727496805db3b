"""Settings of the tracking service process."""

from libs.settings import Settings


class TrackingSettings(Settings):
    pass


SETTINGS_CLASS = TrackingSettings
