"""Settings of the rules service process."""

from libs.settings import Settings


class RulesSettings(Settings):
    pass


SETTINGS_CLASS = RulesSettings
