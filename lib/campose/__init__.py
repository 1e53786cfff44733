"""campose: camera pose estimation on a rendered building, from SfM labels to a served model.

Conventions (see docs/design.md): world frame in metres, x east, y north, z up, floor at z = 0.
A pose is camera-to-world: position ``x`` (camera centre) and unit quaternion ``q`` (w, x, y, z;
w >= 0) rotating camera axes (x right, y down, z forward; OpenCV/COLMAP) into the world.
"""

__version__ = "0.1.0"
