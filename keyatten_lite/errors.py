"""Exceptions raised by keyatten-lite.

Every error a caller can trigger is a subclass of ``KeyAttenLiteError``. Errors about arguments are
also ``ValueError`` (so code written for keyatten 0.3.1, which raised ``ValueError``, keeps working);
errors about bundle files are also ``OSError`` subclasses where a file is missing.
"""


class KeyAttenLiteError(Exception):
    """Base class of every error raised on purpose by keyatten-lite."""


class InvalidArgumentError(KeyAttenLiteError, ValueError):
    """A caller passed an argument that cannot be honoured (wrong type, unknown method, ...)."""


class BundleError(KeyAttenLiteError, ValueError):
    """A model bundle is missing, damaged, or does not match its manifest."""


class BundleNotFoundError(BundleError, FileNotFoundError):
    """No bundle at the given path, or a default bundle that has not been built yet."""


class ChecksumError(BundleError):
    """A file in a bundle does not have the sha256 recorded in its manifest."""
