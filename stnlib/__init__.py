"""stnlib: the support library of the Spatial Transformer Networks course.

Every function a notebook calls lives here, short and tested. The from-scratch grid
generator and sampler mirror ``torch.nn.functional.affine_grid`` / ``grid_sample``
(same signatures, same results), so a learner can swap one for the other.
"""

from stnlib.fastmode import FAST, fast_mode

__version__ = "0.1.0"

__all__ = ["FAST", "fast_mode", "__version__"]
