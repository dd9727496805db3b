"""Settings of the scheduler service process."""

from libs.settings import Settings


class SchedulerSettings(Settings):
    pass


SETTINGS_CLASS = SchedulerSettings
