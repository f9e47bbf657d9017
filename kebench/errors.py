"""User-facing errors: one line naming the problem and the fix, shown without a traceback."""


class KebenchError(Exception):
    """An error caused by the user's input or environment; the CLI prints it as one line."""


class ConfigError(KebenchError):
    """Bad option, unknown name, or impossible combination of options."""


class DataError(KebenchError):
    """A data file or record that cannot be used."""


class ModelError(KebenchError):
    """A model that cannot be found, loaded or adapted."""


class NumericalError(KebenchError):
    """NaN/Inf or a singular system met while editing; results would be meaningless."""
