"""``ClmError``, the base class of every error clm raises on purpose, in a module that imports nothing.

``clm run`` catches it around the whole command; keeping it here lets the
command start the kernel server before it imports pandas and the rest
(``clm_helpers.data`` re-exports it, where the other errors live).
"""


class ClmError(Exception):
    """Base class of every error clm raises on purpose."""
