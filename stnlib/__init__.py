"""stnlib: the support library of the Spatial Transformer Networks course.

Every function a notebook calls lives here, short and tested. The from-scratch grid
generator and sampler mirror ``torch.nn.functional.affine_grid`` / ``grid_sample``
(same signatures, same results), so a learner can swap one for the other.
"""

from stnlib import affine  # the helpers: rotation_2d, compose, pixel_to_normalized, ...
from stnlib.affine import pixel_matrix_from_theta, theta_from_pixel_matrix
from stnlib.checkpoint import load_checkpoint
from stnlib.fastmode import FAST, fast_mode
from stnlib.grid import affine_grid
from stnlib.localization import LocalizationNet
from stnlib.models import CNN, STCNN
from stnlib.models3d import CNN3d, LocalizationNet3d, SpatialTransformer3d, STCNN3d
from stnlib.projective import projective_grid
from stnlib.sampler import grid_sample
from stnlib.tps import tps_grid
from stnlib.transformer import SpatialTransformer

__version__ = "0.1.0"

__all__ = ["FAST", "fast_mode", "__version__", "affine_grid", "grid_sample",
           "theta_from_pixel_matrix", "pixel_matrix_from_theta", "projective_grid", "tps_grid",
           "load_checkpoint", "LocalizationNet", "SpatialTransformer", "CNN", "STCNN"]
__all__ += ["CNN3d", "STCNN3d", "LocalizationNet3d", "SpatialTransformer3d"]
__all__ += ["affine"]
