"""Structure from motion with pycolmap (COLMAP) on the CPU: images in, poses and a sparse map out.

This is the only module that touches COLMAP's pose convention (world-to-camera, ``cam_from_world``,
quaternions x, y, z, w); everything it returns is camera-to-world with w-first quaternions.
"""

from __future__ import annotations

import numpy as np


def set_colmap_verbosity(verbose: bool = False) -> None:
    """COLMAP logs every step at INFO level; keep it to warnings and errors unless asked."""
    import pycolmap

    pycolmap.logging.minloglevel = 0 if verbose else 2


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) or grey (H, W) -> float32 grey in [0, 1], as COLMAP's SIFT expects."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = img[..., :3] @ np.array([0.299, 0.587, 0.114])
    return (img / 255.0).astype(np.float32)


def sift_keypoints(image: np.ndarray, max_num_features: int = 8192) -> np.ndarray:
    """COLMAP's SIFT keypoints of an image (CPU): (N, 4) rows of x, y (pixels), scale, orientation."""
    import pycolmap

    set_colmap_verbosity(False)
    opts = pycolmap.FeatureExtractionOptions()
    opts.sift.max_num_features = int(max_num_features)
    extractor = pycolmap.FeatureExtractor.create(opts, device=pycolmap.Device.cpu)
    kps, _ = extractor.extract_from_float32_array(to_grey(image))
    return np.array([[k.x, k.y, k.compute_scale(), k.compute_orientation()] for k in kps]).reshape(-1, 4)
