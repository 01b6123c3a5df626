"""How training shows its progress: live bars, one printed line per epoch, or nothing.

Live tqdm bars are right while you watch a notebook or a terminal. They are wrong in a
notebook saved to read on GitHub, which shows a frozen "0%" for every bar. They are also
wrong in a CI log, which fills up with carriage returns. So ``fit(progress=...)`` takes:

=========== ==========================================================================
``progress`` what you see
=========== ==========================================================================
``True``    the style named by ``$STNLIB_PROGRESS``, or ``"bars"`` when it is unset
``"bars"``  tqdm bars (widgets in Jupyter): epochs, and batches with loss / accuracy
``"lines"`` one printed line per epoch: loss, accuracy, test accuracy, seconds
``False``   nothing (``"off"`` too)
=========== ==========================================================================

``make notebooks`` re-executes the course with ``STNLIB_PROGRESS=lines``, so the saved
outputs read as a log.
"""

from __future__ import annotations

import os

ENV_VAR = "STNLIB_PROGRESS"
STYLES: tuple[str, ...] = ("bars", "lines", "off")


def progress_style(progress: bool | str = True) -> str:
    """Resolve a ``progress`` argument to ``"bars"``, ``"lines"`` or ``"off"``.

    ``True`` reads ``$STNLIB_PROGRESS`` at each call (unset or empty means ``"bars"``).
    A style that is not one of :data:`STYLES`, in the argument or in the environment
    variable, raises ``ValueError`` naming the choices.
    """
    if progress is False:
        return "off"
    if progress is True:
        value = os.environ.get(ENV_VAR, "").strip().lower() or "bars"
        if value not in STYLES:
            raise ValueError(f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not understood: use one "
                             f"of {', '.join(STYLES)} (or unset it for bars)")
        return value
    if isinstance(progress, str) and progress in STYLES:
        return progress
    raise ValueError(f"progress must be True, False or one of {STYLES}, got {progress!r}")


def epoch_line(epoch: int, epochs: int, loss: float, accuracy: float,
               test_accuracy: float | None, seconds: float) -> str:
    """The ``"lines"`` style's report of one finished epoch, for example
    ``epoch 3/12: loss 0.1234, accuracy 0.9712, test accuracy 0.9801 (12.3 s)``."""
    test = f", test accuracy {test_accuracy:.4f}" if test_accuracy is not None else ""
    return (f"epoch {epoch}/{epochs}: loss {loss:.4f}, accuracy {accuracy:.4f}{test} "
            f"({seconds:.1f} s)")
