"""Pinhole camera intrinsics (pixels), stored as JSON next to each sequence's poses.

Pixel coordinates follow OpenCV/COLMAP: u right, v down, the centre of the top-left pixel at
(0.5, 0.5) (COLMAP's convention), so a ray through pixel centre (u, v) has camera-frame direction
((u - cx) / fx, (v - cy) / fy, 1).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path


class IntrinsicsError(ValueError):
    """An intrinsics file or value is malformed."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics: image size (px), focal lengths (px) and principal point (px)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self):
        for k in ("width", "height"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 8 or v > 20000:
                raise IntrinsicsError(f"intrinsics {k} must be an integer in 8..20000 pixels, got {v!r}")
        for k in ("fx", "fy", "cx", "cy"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise IntrinsicsError(f"intrinsics {k} must be a finite number, got {v!r}")
        if self.fx <= 0 or self.fy <= 0:
            raise IntrinsicsError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        if not (0 <= self.cx <= self.width and 0 <= self.cy <= self.height):
            raise IntrinsicsError(f"principal point ({self.cx}, {self.cy}) lies outside the {self.width}x{self.height} image")

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float = 65.0) -> "Intrinsics":
        """Square pixels, centred principal point, horizontal field of view in degrees."""
        if not 10 <= hfov_deg <= 150:
            raise IntrinsicsError(f"horizontal field of view {hfov_deg} deg is outside 10..150")
        f = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
        return cls(int(width), int(height), f, f, width / 2, height / 2)

    @property
    def hfov_deg(self) -> float:
        return math.degrees(2 * math.atan(self.width / (2 * self.fx)))

    def scaled(self, width: int, height: int) -> "Intrinsics":
        """The same camera at another resolution (e.g. 640x480 renders for SfM, 160x120 for nets)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(int(width), int(height), self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy)

    def matrix(self):
        import numpy as np

        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    def to_dict(self) -> dict:
        return {"model": "PINHOLE", **asdict(self)}

    def colmap_params(self) -> str:
        """``"fx,fy,cx,cy"`` for pycolmap's ImageReaderOptions(camera_model="PINHOLE")."""
        return f"{self.fx!r},{self.fy!r},{self.cx!r},{self.cy!r}"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict) -> "Intrinsics":
        if not isinstance(d, dict):
            raise IntrinsicsError(f"intrinsics must be a JSON object, got {type(d).__name__}")
        model = d.get("model", "PINHOLE")
        if model != "PINHOLE":
            raise IntrinsicsError(f"only the PINHOLE camera model is supported, got {model!r}")
        missing = [k for k in ("width", "height", "fx", "fy", "cx", "cy") if k not in d]
        if missing:
            raise IntrinsicsError(f"intrinsics are missing {', '.join(missing)}")
        return cls(d["width"], d["height"], d["fx"], d["fy"], d["cx"], d["cy"])

    @classmethod
    def load(cls, path: str | Path) -> "Intrinsics":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise IntrinsicsError(f"intrinsics file not found: {path}") from None
        except json.JSONDecodeError as e:
            raise IntrinsicsError(f"intrinsics file {path} is not valid JSON: {e}") from None
        try:
            return cls.from_dict(d)
        except IntrinsicsError as e:
            raise IntrinsicsError(f"{path}: {e}") from None
