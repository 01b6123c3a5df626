"""stnlib: the support library of the Spatial Transformer Networks course.

Every function a notebook calls lives here, short and tested. The from-scratch grid
generator and sampler mirror ``torch.nn.functional.affine_grid`` / ``grid_sample``
(same signatures, same results), so a learner can swap one for the other.
"""

from stnlib.affine import pixel_matrix_from_theta, theta_from_pixel_matrix
from stnlib.fastmode import FAST, fast_mode
from stnlib.grid import affine_grid
from stnlib.projective import projective_grid
from stnlib.tps import tps_grid

__version__ = "0.1.0"

__all__ = ["FAST", "fast_mode", "__version__", "affine_grid", "theta_from_pixel_matrix",
           "pixel_matrix_from_theta", "projective_grid", "tps_grid"]
