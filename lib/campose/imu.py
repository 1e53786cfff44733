"""A consumer phone IMU along a camera trajectory, and how fast strapdown dead reckoning drifts.

Frames and units: world in metres (x east, y north, z up), gravity ``G = (0, 0, -9.80665)`` m/s^2.
A trajectory is times ``t`` (N,) s, camera centres ``x`` (N, 3) m and camera-to-world unit
quaternions ``q`` (N, 4) in w, x, y, z order; camera axes x right, y down, z forward. The IMU is
rigidly attached to the camera, so body frame = camera frame and the IMU sits at the camera centre.

* :func:`interpolate_trajectory` resamples a (video-rate) trajectory at the IMU rate with a cubic
  spline for positions (C2, so accelerations are defined) and scipy's ``RotationSpline`` for
  orientations (continuous angular rate and acceleration).
* :func:`simulate_imu` turns that into accelerometer readings (specific force in the body frame,
  ``f_b = R^T (a_world - G)``, m/s^2) and gyroscope readings (body angular rate, rad/s) with white
  noise, a constant turn-on bias and a bias random walk (:class:`ImuSpec`).
* :func:`dead_reckon` integrates the readings by strapdown dead reckoning.
* :func:`drift_curves` and :func:`monte_carlo_drift` measure the position and heading drift.

Only numpy and scipy are used; quaternions here are w, x, y, z (scipy's are x, y, z, w).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.spatial.transform import Rotation, RotationSpline

STANDARD_GRAVITY = 9.80665  # m/s^2
G = np.array([0.0, 0.0, -STANDARD_GRAVITY])  # gravity in the world frame, m/s^2
_DEG = math.pi / 180.0

# Figures of the Bosch BMI160 data sheet (BST-BMI160-DS000-07, rev. 0.8, Feb 2015), typical values
# at 25 degC, in the data sheet's own units: name -> (value, unit, what the data sheet calls it).
# ImuSpec.bmi160 derives its terms from these; the book's dataset chapter tabulates them.
BMI160_DATASHEET: dict[str, tuple[float, str, str]] = {
    "gyro_noise_density": (0.007, "deg/s/sqrt(Hz)", "gyroscope output noise density"),
    "accel_noise_density": (180.0, "ug/sqrt(Hz)", "accelerometer output noise density"),
    "gyro_offset": (3.0, "deg/s", "gyroscope zero-rate offset"),
    "accel_offset": (40.0, "mg", "accelerometer zero-g offset"),
    "gyro_offset_tempco": (0.05, "deg/s/K", "temperature drift of the zero-rate offset"),
    "accel_offset_tempco": (1.0, "mg/K", "temperature drift of the zero-g offset"),
}

# The independent error terms of an ImuSpec (its fields other than rate_hz and name).
ERROR_TERMS = ("accel_noise_density", "gyro_noise_density", "accel_bias_sigma", "gyro_bias_sigma",
               "accel_bias_walk", "gyro_bias_walk")


@dataclass(frozen=True)
class ImuSpec:
    """Error model of a 6-axis IMU; every term is independent per axis.

    ``*_noise_density``: white measurement noise (accel m/s^2/sqrt(Hz), gyro rad/s/sqrt(Hz)); a
    sample at ``rate_hz`` has standard deviation ``density * sqrt(rate_hz)``.
    ``*_bias_sigma``: 1-sigma of the constant bias drawn once per run (turn-on bias / residual
    offset after calibration; accel m/s^2, gyro rad/s).
    ``*_bias_walk``: bias random walk (rate random walk) density, accel m/s^3/sqrt(Hz), gyro
    rad/s^2/sqrt(Hz): the bias moves by ``walk * sqrt(dt)`` per sample.
    """

    accel_noise_density: float
    gyro_noise_density: float
    accel_bias_sigma: float
    gyro_bias_sigma: float
    accel_bias_walk: float
    gyro_bias_walk: float
    rate_hz: float = 200.0
    name: str = "custom"

    def __post_init__(self):
        values = [self.accel_noise_density, self.gyro_noise_density, self.accel_bias_sigma,
                  self.gyro_bias_sigma, self.accel_bias_walk, self.gyro_bias_walk]
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"ImuSpec {self.name!r}: noise and bias terms must be finite and >= 0")
        if not (math.isfinite(self.rate_hz) and self.rate_hz > 0):
            raise ValueError(f"ImuSpec {self.name!r}: rate_hz must be > 0, got {self.rate_hz}")

    def only(self, *terms: str, name: str | None = None) -> ImuSpec:
        """A copy that keeps only the error ``terms`` (names from :data:`ERROR_TERMS`) and sets
        every other error term to zero, to see what each error source contributes to the drift.
        ``name`` defaults to the kept terms joined by ``+``."""
        unknown = [t for t in terms if t not in ERROR_TERMS]
        if unknown or not terms:
            raise ValueError(f"ImuSpec.only: unknown or no error terms {unknown or list(terms)}; "
                             f"choose from {', '.join(ERROR_TERMS)}")
        return replace(self, **{t: 0.0 for t in ERROR_TERMS if t not in terms},
                       name=name if name is not None else "+".join(terms))

    @classmethod
    def ideal(cls, rate_hz: float = 200.0) -> ImuSpec:
        """A perfect IMU: no noise, no bias (for testing the integrator)."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, rate_hz, "ideal")

    @classmethod
    def bmi160(cls, rate_hz: float = 200.0, gyro_bias_dps: float = 0.1,
               accel_bias_mg: float = 5.0) -> ImuSpec:
        """Bosch BMI160, a consumer MEMS IMU used in many phones.

        Datasheet figures (Bosch Sensortec, "BMI160 Data sheet", BST-BMI160-DS000-07, rev. 0.8,
        Feb 2015; typical values at 25 degC, which Bosch states are 1-sigma figures; kept in
        :data:`BMI160_DATASHEET`):

        * gyroscope output noise density 0.007 deg/s/sqrt(Hz) -> 1.22e-4 rad/s/sqrt(Hz);
        * accelerometer output noise density 180 ug/sqrt(Hz) -> 1.77e-3 m/s^2/sqrt(Hz);
        * gyroscope zero-rate offset +-3 deg/s; accelerometer zero-g offset +-40 mg. These are the
          *uncalibrated* turn-on offsets; pass ``gyro_bias_dps=3, accel_bias_mg=40`` to use them;
        * temperature drift of those offsets: +-0.05 deg/s/K (gyro), +-1 mg/K (accel).

        Assumptions (not in the datasheet):

        * the default biases are *residuals after calibration*: phones re-estimate the gyro
          offset whenever the device rests, and the accelerometer is factory trimmed, so the
          offsets left are set by temperature change since the last calibration. We assume a few
          kelvin: ``gyro_bias_dps = 0.1`` (2 K x 0.05 deg/s/K) and ``accel_bias_mg = 5``
          (5 K x 1 mg/K), drawn once per run as 1-sigma per axis;
        * bias random walk: the datasheet gives no Allan-variance figures; we use
          4e-5 rad/s^2/sqrt(Hz) (gyro) and 2e-3 m/s^3/sqrt(Hz) (accel), about twice the Kalibr
          calibration of the ADIS16448 in the EuRoC MAV dataset, an order of magnitude typical
          for consumer MEMS. Over a minute they add less than the residual offsets above;
        * no scale-factor, misalignment, g-sensitivity or quantisation errors (all would only
          make the drift worse); the sample rate is ``rate_hz`` (200 Hz, a common phone rate).
        """
        sheet = {k: v[0] for k, v in BMI160_DATASHEET.items()}
        return cls(
            accel_noise_density=sheet["accel_noise_density"] * 1e-6 * STANDARD_GRAVITY,
            gyro_noise_density=sheet["gyro_noise_density"] * _DEG,
            accel_bias_sigma=accel_bias_mg * 1e-3 * STANDARD_GRAVITY,
            gyro_bias_sigma=gyro_bias_dps * _DEG,
            accel_bias_walk=2e-3,
            gyro_bias_walk=4e-5,
            rate_hz=rate_hz,
            name=f"BMI160 (gyro bias {gyro_bias_dps:g} deg/s, accel bias {accel_bias_mg:g} mg)",
        )


class Resampled(NamedTuple):
    """A trajectory sampled at ``times`` (n,) s: world positions (n, 3) m, velocities (n, 3) m/s,
    accelerations (n, 3) m/s^2, camera-to-world quaternions (n, 4) wxyz and body-frame angular
    velocity (n, 3) rad/s."""

    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    accelerations: np.ndarray
    orientations: np.ndarray
    angular_velocity: np.ndarray


@dataclass(frozen=True)
class ImuReadings:
    """Simulated IMU output at ``times`` (n,) s, body (camera) frame.

    ``accel``: measured specific force (n, 3) m/s^2; ``gyro``: measured angular rate (n, 3) rad/s.
    ``accel_true``/``gyro_true``: the error-free values; ``accel_bias``/``gyro_bias``: the bias
    actually added at each sample (turn-on bias + random walk). ``truth`` is the true trajectory
    at ``times`` (world frame).
    """

    times: np.ndarray
    accel: np.ndarray
    gyro: np.ndarray
    accel_true: np.ndarray
    gyro_true: np.ndarray
    accel_bias: np.ndarray
    gyro_bias: np.ndarray
    truth: Resampled
    spec: ImuSpec


class DeadReckoning(NamedTuple):
    """Strapdown estimate at ``times`` (n,) s: world positions (n, 3) m, velocities (n, 3) m/s and
    camera-to-world quaternions (n, 4) wxyz."""

    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    orientations: np.ndarray


class Drift(NamedTuple):
    """Errors of an estimate over ``times`` (n,) s: ``position_error`` (n,) m (Euclidean) and signed
    ``yaw_error_deg`` (n,) deg (rotation about world z of estimate relative to truth)."""

    times: np.ndarray
    position_error: np.ndarray
    yaw_error_deg: np.ndarray


class MonteCarloDrift(NamedTuple):
    """Drift over ``runs`` simulated IMUs: per-run ``position_errors`` (runs, n) m and
    ``yaw_errors_deg`` (runs, n) (absolute, deg); ``median``/``p10``/``p90`` of the position error
    and ``yaw_median``/``yaw_p10``/``yaw_p90`` of the absolute yaw error, each (n,)."""

    times: np.ndarray
    position_errors: np.ndarray
    yaw_errors_deg: np.ndarray
    median: np.ndarray
    p10: np.ndarray
    p90: np.ndarray
    yaw_median: np.ndarray
    yaw_p10: np.ndarray
    yaw_p90: np.ndarray


# --- quaternions (w, x, y, z), vectorised over leading axes -------------------------------------

def _qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def _qexp(rotvec: np.ndarray) -> np.ndarray:
    """Exact unit quaternion of a rotation vector (rad)."""
    angle = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    return np.concatenate([np.cos(angle / 2), 0.5 * np.sinc(angle / (2 * np.pi)) * rotvec], -1)


def _qrotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors ``v`` (..., 3) by unit quaternions ``q`` (..., 4)."""
    w, u = q[..., :1], q[..., 1:]
    uv = np.cross(u, v)
    return v + 2.0 * (w * uv + np.cross(u, uv))


def _canonical(q: np.ndarray) -> np.ndarray:
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def _to_scipy(q: np.ndarray) -> Rotation:
    return Rotation.from_quat(np.asarray(q)[..., [1, 2, 3, 0]])


def _from_scipy(r: Rotation) -> np.ndarray:
    return _canonical(r.as_quat()[..., [3, 0, 1, 2]])


def _cumulative_qmul(dq: np.ndarray) -> np.ndarray:
    """Inclusive ordered product ``dq[0] * dq[1] * ... * dq[k]`` along axis -2 (Hillis-Steele
    scan: log2(n) vectorised passes instead of an n-step Python loop)."""
    p = dq.copy()
    n, step = dq.shape[-2], 1
    while step < n:
        p[..., step:, :] = _qmul(p[..., :-step, :], p[..., step:, :])
        step *= 2
    return p


# --- trajectory ----------------------------------------------------------------------------------

def _check_trajectory(t, x, q) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, x, q = (np.asarray(a, dtype=float) for a in (t, x, q))
    if t.ndim != 1 or x.shape != (len(t), 3) or q.shape != (len(t), 4):
        raise ValueError(f"trajectory shapes mismatch: need t (N,), x (N, 3), q (N, 4); got "
                         f"t {t.shape}, x {x.shape}, q {q.shape}")
    if len(t) < 4:
        raise ValueError(f"need at least 4 poses for a cubic spline, got {len(t)}")
    if not (np.isfinite(t).all() and np.isfinite(x).all() and np.isfinite(q).all()):
        raise ValueError("trajectory contains NaN or infinite values")
    if np.any(np.diff(t) <= 0):
        k = int(np.argmax(np.diff(t) <= 0))
        raise ValueError(f"times must be strictly increasing: t[{k}]={t[k]} >= "
                         f"t[{k + 1}]={t[k + 1]}")
    norm_err = np.abs(np.linalg.norm(q, axis=1) - 1.0)
    if norm_err.max() > 1e-6:
        k = int(np.argmax(norm_err))
        raise ValueError(f"quaternions must be unit (w, x, y, z): |q[{k}]| = "
                         f"{np.linalg.norm(q[k]):.6g}")
    return t, x, q


class _TrajectorySpline:
    """C2 cubic spline of positions and scipy RotationSpline of orientations."""

    def __init__(self, t, x, q):
        self.t, x, q = _check_trajectory(t, x, q)
        self.pos = CubicSpline(self.t, x, axis=0)
        self.rot = RotationSpline(self.t, _to_scipy(q))

    def __call__(self, times: np.ndarray) -> Resampled:
        times = np.asarray(times, dtype=float)
        # RotationSpline's first derivative is the angular rate in the *body* frame (checked
        # against finite differences of R(t)^-1 R(t + h) in the tests).
        return Resampled(times, self.pos(times), self.pos(times, 1), self.pos(times, 2),
                         _from_scipy(self.rot(times)), self.rot(times, 1))


def _imu_times(t0: float, t1: float, rate_hz: float) -> np.ndarray:
    n = int(math.floor((t1 - t0) * rate_hz + 1e-9)) + 1
    return t0 + np.arange(n) / rate_hz


def interpolate_trajectory(t, x, q, rate_hz: float) -> Resampled:
    """Resample a trajectory (t (N,) s, x (N, 3) m, q (N, 4) wxyz camera-to-world) at ``rate_hz``
    from ``t[0]`` to ``t[-1]``: world positions, velocities, accelerations, orientations and
    body-frame angular velocity (rad/s)."""
    spline = _TrajectorySpline(t, x, q)
    if not rate_hz > 0:
        raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
    return spline(_imu_times(spline.t[0], spline.t[-1], rate_hz))


# --- IMU -----------------------------------------------------------------------------------------

def _draw_errors(spec: ImuSpec, n: int, rng: np.random.Generator):
    """Biases (n, 3) and white noise (n, 3) for accel and gyro, in that order."""
    dt = 1.0 / spec.rate_hz
    out = []
    for sigma, walk, density in ((spec.accel_bias_sigma, spec.accel_bias_walk,
                                  spec.accel_noise_density),
                                 (spec.gyro_bias_sigma, spec.gyro_bias_walk,
                                  spec.gyro_noise_density)):
        steps = rng.standard_normal((n, 3)) * (walk * math.sqrt(dt))
        steps[0] = 0.0
        bias = sigma * rng.standard_normal(3) + np.cumsum(steps, axis=0)
        out += [bias, density * math.sqrt(spec.rate_hz) * rng.standard_normal((n, 3))]
    return out


def simulate_imu(t, x, q, spec: ImuSpec, seed=0) -> ImuReadings:
    """Simulate ``spec`` rigidly attached to the camera along a trajectory (t (N,) s, x (N, 3) m,
    q (N, 4) wxyz camera-to-world), sampled at ``spec.rate_hz``. Deterministic for a given
    ``seed`` (anything ``numpy.random.default_rng`` accepts)."""
    truth = interpolate_trajectory(t, x, q, spec.rate_hz)
    return _readings(truth, spec, np.random.default_rng(seed))


def _readings(truth: Resampled, spec: ImuSpec, rng: np.random.Generator) -> ImuReadings:
    q_inv = truth.orientations * np.array([1.0, -1.0, -1.0, -1.0])
    f_true = _qrotate(q_inv, truth.accelerations - G)
    accel_bias, accel_noise, gyro_bias, gyro_noise = _draw_errors(spec, len(truth.times), rng)
    return ImuReadings(truth.times, f_true + accel_bias + accel_noise,
                       truth.angular_velocity + gyro_bias + gyro_noise, f_true,
                       truth.angular_velocity, accel_bias, gyro_bias, truth, spec)


# Weights of 4-point Lagrange quadrature on a uniform grid (step h) over one step [t_k, t_k+1]:
# row r uses samples k-r .. k-r+3 (r = 1 inside, 0 at the first step, 2 at the last).
# _W_INT: int y dt = h * sum(w y); _W_DOUBLE: int (t_k+1 - t) y dt = h^2 * sum(w y).
_W_INT = np.array([[9, 19, -5, 1], [-1, 13, 13, -1], [1, -5, 19, 9]]) / 24.0
_W_DOUBLE = np.array([[97, 114, -39, 8], [-8, 129, 66, -7], [7, -36, 171, 38]]) / 360.0


def _strapdown(times, accel, gyro, x0, v0, q0):
    """Integrate specific force / angular rate (..., n, 3) from x0, v0 (..., 3), q0 (..., 4).

    The readings are instantaneous samples of smooth signals, so each step integrates the cubic
    through the four nearest samples (4th-order quadrature) instead of the trapezoid; the rotation
    vector of a step also gets the coning correction h^2/12 w_k x w_k+1 (Bortz), so the
    non-commutativity of 3-D rotation is integrated to third order.
    """
    n = len(times)
    if n < 4:
        raise ValueError(f"need at least 4 IMU samples to integrate, got {n}")
    h = float(times[1] - times[0])
    if np.abs(np.diff(times) - h).max() > 1e-6 * h:
        raise ValueError("IMU samples must be uniformly spaced in time")
    k = np.arange(n - 1)
    start = np.clip(k - 1, 0, n - 4)
    w_int, w_double = _W_INT[k - start], _W_DOUBLE[k - start]

    def quad(y, w):
        return sum(w[:, j, None] * y[..., start + j, :] for j in range(4))

    w0, w1 = gyro[..., :-1, :], gyro[..., 1:, :]
    theta = h * quad(gyro, w_int) + np.cross(w0, w1) * (h * h / 12.0)
    increments = _cumulative_qmul(_qexp(theta))
    q0 = np.broadcast_to(np.asarray(q0, float), increments.shape[:-2] + (4,))
    quats = np.concatenate([q0[..., None, :], _qmul(q0[..., None, :], increments)], axis=-2)
    quats = _canonical(quats)
    a = _qrotate(quats, accel) + G  # world acceleration at the sampling instants
    zero = np.zeros_like(a[..., :1, :])
    v = np.concatenate([zero, np.cumsum(h * quad(a, w_int), axis=-2)], axis=-2)
    v = v + np.asarray(v0, float)[..., None, :]
    dp = v[..., :-1, :] * h + h * h * quad(a, w_double)
    p = np.concatenate([zero, np.cumsum(dp, axis=-2)], axis=-2)
    return p + np.asarray(x0, float)[..., None, :], v, quats


def dead_reckon(readings: ImuReadings, x0=None, v0=None, q0=None) -> DeadReckoning:
    """Strapdown dead reckoning of ``readings`` from the initial position ``x0`` (3,) m, velocity
    ``v0`` (3,) m/s and camera-to-world quaternion ``q0`` (4,) wxyz (each defaults to the truth
    at the first sample); readings must be uniformly sampled. Orientation: exact quaternion
    exponential of each step's rotation vector (4th-order quadrature of the rates plus the coning
    correction); velocity and position: 4th-order quadrature of the world acceleration
    ``R f_b + G`` at the sampling instants."""
    truth = readings.truth
    x0 = truth.positions[0] if x0 is None else np.asarray(x0, float)
    v0 = truth.velocities[0] if v0 is None else np.asarray(v0, float)
    q0 = truth.orientations[0] if q0 is None else np.asarray(q0, float)
    if x0.shape != (3,) or v0.shape != (3,) or q0.shape != (4,):
        raise ValueError(f"need x0 (3,), v0 (3,), q0 (4,); got {x0.shape}, {v0.shape}, {q0.shape}")
    if abs(np.linalg.norm(q0) - 1.0) > 1e-6:
        raise ValueError(f"q0 must be a unit quaternion (w, x, y, z), "
                         f"|q0| = {np.linalg.norm(q0):.6g}")
    p, v, quats = _strapdown(readings.times, readings.accel, readings.gyro, x0, v0, q0)
    return DeadReckoning(readings.times, p, v, quats)


# --- drift ---------------------------------------------------------------------------------------

def _yaw_error_deg(q_est: np.ndarray, q_true: np.ndarray) -> np.ndarray:
    """Signed angle (deg) about world z of the world-frame error rotation R_est R_true^T."""
    conj = q_true * np.array([1.0, -1.0, -1.0, -1.0])
    w, x, y, z = np.moveaxis(_qmul(q_est, conj), -1, 0)
    return np.degrees(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def drift_curves(t_true, x_true, q_true, readings: ImuReadings,
                 estimate: DeadReckoning) -> Drift:
    """Position error (m) and signed heading (yaw) error (deg) of ``estimate`` against the true
    trajectory (t (N,) s, x (N, 3) m, q (N, 4) wxyz), at the IMU sample times."""
    truth = _TrajectorySpline(t_true, x_true, q_true)(readings.times)
    pos_err = np.linalg.norm(estimate.positions - truth.positions, axis=-1)
    return Drift(readings.times, pos_err, _yaw_error_deg(estimate.orientations, truth.orientations))


def monte_carlo_drift(t, x, q, spec: ImuSpec, runs: int = 20, seed=0) -> MonteCarloDrift:
    """Dead-reckon ``runs`` independent simulated IMUs along the trajectory (t (N,) s, x (N, 3) m,
    q (N, 4) wxyz), each started from the true initial state, and return the median and
    10/90 percentile envelopes of the position error (m) and absolute yaw error (deg) over time.
    Run ``k`` equals ``simulate_imu(t, x, q, spec, seed=s[k])`` with
    ``s = np.random.SeedSequence(seed).spawn(runs)``."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    truth = interpolate_trajectory(t, x, q, spec.rate_hz)
    sims = [_readings(truth, spec, np.random.default_rng(s))
            for s in np.random.SeedSequence(seed).spawn(runs)]
    p, _, quats = _strapdown(truth.times, np.stack([s.accel for s in sims]),
                             np.stack([s.gyro for s in sims]), truth.positions[0],
                             truth.velocities[0], truth.orientations[0])
    pos_err = np.linalg.norm(p - truth.positions, axis=-1)
    yaw_err = np.abs(_yaw_error_deg(quats, truth.orientations))
    (p10, med, p90), (y10, ymed, y90) = (np.percentile(e, [10, 50, 90], axis=0)
                                         for e in (pos_err, yaw_err))
    return MonteCarloDrift(truth.times, pos_err, yaw_err, med, p10, p90, ymed, y10, y90)
