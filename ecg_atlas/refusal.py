"""What one ECG file's read ends in when it fails: a refusal with a reason, never the end of a run.

Every run that reads many files (``ecg-atlas embed``, ``ecg-atlas ingest``'s request stream, the
Ray read tasks) hands whatever reading one file raised to ``read_refusal``. The readers raise
``InvalidECGError`` with a precise reason for every damage they check; this is the defence in depth
for what they do not: any other exception (a ``ZeroDivisionError`` in a decoder, a ``MemoryError``
from a declared size) becomes that file's refusal with reason ``unreadable`` and a message naming
the exception type. Its traceback goes to the DEBUG log only (``ecg-atlas -vv``); the message
names no path, patient or signal value. ``KeyboardInterrupt`` and ``SystemExit`` are not
refusals: they still stop the run.
"""

from __future__ import annotations

import logging

from ecg_atlas.errors import AtlasError, InvalidECGError

logger = logging.getLogger(__name__)

#: The reason code of a file whose reader failed in a way it does not check for.
UNREADABLE = "unreadable"


def read_refusal(error: BaseException, ecg_id: str = "") -> AtlasError:
    """The refusal for one ECG whose read (or preparation) raised `error`.

    An ``AtlasError`` is its own refusal (its reason and message stand); any other ``Exception``
    becomes ``InvalidECGError(reason="unreadable")``. A ``BaseException`` that is not an
    ``Exception`` (KeyboardInterrupt, SystemExit) is raised again: it ends the run, as asked.
    """
    if not isinstance(error, Exception):
        raise error
    if isinstance(error, AtlasError):
        return error
    logger.debug("reading ECG %s failed", ecg_id, exc_info=error)
    cause = f": {error.strerror}" if isinstance(error, OSError) and error.strerror else ""
    return InvalidECGError(f"this ECG could not be read: the reader failed with {type(error).__name__}{cause} "
                           f"(damage it does not check for; its traceback is logged at DEBUG: ecg-atlas -vv)",
                           reason=UNREADABLE)
