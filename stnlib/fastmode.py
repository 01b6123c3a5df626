"""Fast mode: one switch that makes every training notebook run in seconds.

``make test`` sets ``STNLIB_FAST=1``. Code that trains asks :func:`fast_mode` and then
uses a small subset and a few steps *through the same code path* as the full lesson,
so CI exercises exactly what the learner runs.
"""

from __future__ import annotations

import os

ENV_VAR = "STNLIB_FAST"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def fast_mode() -> bool:
    """Whether fast mode is on, read from ``$STNLIB_FAST`` at each call.

    ``1/true/yes/on`` turn it on; unset, empty or ``0/false/no/off`` leave it off.
    Any other value is a mistake and raises ``ValueError`` rather than guessing.
    """
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not understood: "
        f"use {ENV_VAR}=1 for fast mode or unset it for the full lesson"
    )


#: Fast mode as it was when stnlib was imported (what a notebook sees).
FAST: bool = fast_mode()
