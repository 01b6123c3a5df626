"""Every figure the notebooks show, one function per figure.

Functions take tensors (CPU, any float dtype) and return the matplotlib ``Figure``
(or draw on a given ``ax``), so notebooks stay one line per figure and tests can
check that a figure is built without showing it.
"""

from __future__ import annotations
