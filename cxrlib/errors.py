"""Errors that carry what a user needs to fix their input."""


class CxrError(Exception):
    """Base class: a problem with the user's input or environment, shown without a traceback by the CLIs."""


class ConfigError(CxrError):
    """A params file or override has an unknown key or a bad value."""


class DataError(CxrError):
    """A data root, image or table cannot be used; the message names the file or folder."""


class LeakageError(CxrError):
    """A group or content hash appears in more than one fold."""


class ArtifactError(CxrError):
    """An expected result file (fold, checkpoint, predictions) is missing or incomplete."""
