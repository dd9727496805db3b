"""Settings of the batch service process."""

from libs.settings import Settings


class BatchSettings(Settings):
    pass


SETTINGS_CLASS = BatchSettings
