"""Check functions for the notebooks' exercises.

Each ``check_*`` takes the learner's answer, prints whether it is right (and a hint
when it is not) and returns ``True``/``False``, so a notebook cell reads
``check_rotation_theta(my_theta)``. ``None`` means "not attempted yet".
"""

from __future__ import annotations

from typing import Any

import torch


def _verdict(answer: Any, ok: bool | None, praise: str, hint: str) -> bool:
    """Print the outcome of one check and return it.

    ``answer is None`` prints "not attempted yet" (the exercise cell's starting state).
    ``ok`` is computed by the caller only when the answer has the right form; pass
    ``ok=None`` with a ``hint`` that explains the form when it does not.
    """
    if answer is None:
        print("Not attempted yet: replace None with your answer and run the cell again.")
        return False
    if ok:
        print(f"Correct! {praise}")
        return True
    print(f"Not yet. Hint: {hint}")
    return False


def _as_tensor(answer: Any, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The answer as a float64 tensor of ``shape``, or None if it cannot be one."""
    try:
        tensor = torch.as_tensor(answer, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return None
    return tensor if tuple(tensor.shape) == shape else None
