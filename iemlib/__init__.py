"""iemlib: Inpainting Error Maximization (Savarese et al., CVPR 2021), exact and fast.

    >>> from iemlib import IEMConfig, segment, evaluate
    >>> result = segment(x)                 # x: (N, 3, 128, 128) in [-1, 1]
    >>> scores = evaluate(result.masks, y)  # y: (N, 1, 128, 128) uint8 0 / 1 / 255
"""
from .iem import (PAPER_INIT_SIZES, IEMConfig, IEMResult, ablations, objective_variants,
                  resolve_device, segment, select_init)
from .inpainters import GaussianInpainter
from .metrics import evaluate
from .objective import diversity, iem_objective, inpainting_error, total_deviation

__version__ = "0.1.0"
__all__ = ["IEMConfig", "IEMResult", "segment", "select_init", "ablations",
           "objective_variants", "resolve_device", "PAPER_INIT_SIZES", "GaussianInpainter",
           "evaluate", "inpainting_error", "diversity", "total_deviation", "iem_objective"]
