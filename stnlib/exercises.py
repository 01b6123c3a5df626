"""Check functions for the notebooks' exercises.

Each ``check_*`` takes the learner's answer, prints whether it is right (and a hint
when it is not) and returns ``True``/``False``, so a notebook cell reads
``check_rotation_theta(my_theta)``. ``None`` means "not attempted yet".
"""

from __future__ import annotations
