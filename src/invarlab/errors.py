"""Errors a user can cause. The CLI prints them in one or two lines, without a traceback, and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """Base class: the message names the file, key or value at fault and what would fix it."""


class ConfigError(UserError):
    """A configuration key, type or value is wrong."""


class DataError(UserError):
    """A dataset path, file or layout is wrong."""


class CheckpointError(UserError):
    """A checkpoint file is missing, unreadable, of an unknown layout, or does not fit the model."""


class StorageError(UserError):
    """A file could not be written (disk full, read-only file system, permissions); the previous one is intact."""
