"""Project exceptions. Each carries a message a user can act on, never a bare library error."""

from __future__ import annotations


class EcgdxError(Exception):
    """Base class for every error ecgdx raises on purpose."""


class InvalidImageError(EcgdxError, ValueError):
    """The input is not an image ecgdx can read: empty, truncated, wrong type or too large."""


class NotAnEcgError(EcgdxError, ValueError):
    """The image was read but does not look like a 12-lead ECG page (quality gate)."""


class ConfigError(EcgdxError, ValueError):
    """A configuration file or --set override is invalid (unknown key, wrong type)."""


class DataError(EcgdxError):
    """A dataset folder, labels file or manifest is missing or inconsistent."""


class ModelError(EcgdxError):
    """A model file or checkpoint is missing, corrupt or incompatible."""
