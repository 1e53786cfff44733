"""Tests for campose.imu: IMU simulation and strapdown dead reckoning."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from campose import imu


def walk(duration=60.0, fps=30.0, speed=1.2, legs=(12.0, 6.0), turn=2.0, height=1.6):
    """A person walking at ``speed`` m/s around a rectangle (legs of 14.4 m and 7.2 m) with smooth
    corners (left turns taking ``turn`` s), camera at eye height with a 2 Hz head-bob, looking
    ahead and slightly down. Returns t (N,), x (N, 3), q (N, 4) wxyz camera-to-world."""
    sub = 100  # fine integration steps per video frame
    dt = 1.0 / (fps * sub)
    fine = np.arange(int(round((duration + 1.0) / dt))) * dt
    heading = np.zeros_like(fine)
    corner, k = 0.0, 0
    while corner < fine[-1]:
        corner += legs[k % 2]
        s = np.clip((fine - corner + turn / 2) / turn, 0.0, 1.0)
        heading += (np.pi / 2) * s * s * s * (10 - 15 * s + 6 * s * s)  # C2 smoothstep
        k += 1
    vel = speed * np.c_[np.cos(heading), np.sin(heading)]
    xy = np.vstack([[0.0, 0.0], np.cumsum(0.5 * (vel[1:] + vel[:-1]) * dt, axis=0)])
    idx = np.arange(int(round(duration * fps)) + 1) * sub
    t = fine[idx]
    bob = 0.02 * np.sin(2 * np.pi * 2.0 * t)
    x = np.c_[xy[idx], height + bob]
    # upright camera looking east: columns = camera x (south), y (down), z (east) in the world
    base = Rotation.from_matrix(np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float))
    pitch = np.radians(10 + 1.5 * np.sin(2 * np.pi * 2.0 * t + 0.5))  # tilt down, bobbing
    roll = np.radians(1.0 * np.sin(2 * np.pi * 1.0 * t))  # sway at the stride frequency
    r = (Rotation.from_euler("z", heading[idx][:, None]) * base
         * Rotation.from_euler("xz", np.c_[-pitch, roll]))
    q = r.as_quat()[:, [3, 0, 1, 2]]
    q[q[:, 0] < 0] *= -1
    return t, x, q


@pytest.fixture(scope="module")
def walk60():
    return walk(60.0)


def test_walk_is_sane(walk60):
    t, x, q = walk60
    res = imu.interpolate_trajectory(t, x, q, 200.0)
    speed = np.linalg.norm(res.velocities[:, :2], axis=1)
    assert np.allclose(speed, 1.2, atol=0.02)
    # camera forward (z) points roughly horizontally ahead, camera y roughly down
    fwd = Rotation.from_quat(res.orientations[:, [1, 2, 3, 0]]).apply([0, 0, 1])
    assert np.all(np.sum(fwd[:, :2] * res.velocities[:, :2], 1) / speed > 0.95)
    assert res.times[0] == 0.0 and res.times[-1] == pytest.approx(60.0)
    assert len(res.times) == 12001


def test_angular_velocity_is_body_frame(walk60):
    t, x, q = walk60
    h = 1e-5
    times = np.array([3.3, 11.9, 25.0])
    a = imu.interpolate_trajectory(t, x, q, 200.0)
    s = imu._TrajectorySpline(t, x, q)
    r0 = Rotation.from_quat(s(times).orientations[:, [1, 2, 3, 0]])
    r1 = Rotation.from_quat(s(times + h).orientations[:, [1, 2, 3, 0]])
    body = (r0.inv() * r1).as_rotvec() / h
    assert np.allclose(s(times).angular_velocity, body, atol=1e-4)
    assert np.abs(a.angular_velocity[:, 1]).max() > 0.5  # yaw about camera y at the corners


def test_ideal_imu_round_trip(walk60):
    t, x, q = walk(30.0)
    readings = imu.simulate_imu(t, x, q, imu.ImuSpec.ideal(200.0), seed=1)
    est = imu.dead_reckon(readings)
    drift = imu.drift_curves(t, x, q, readings, est)
    assert drift.position_error.max() < 0.01
    assert np.abs(drift.yaw_error_deg).max() < 1e-3
    assert np.allclose(est.velocities, readings.truth.velocities, atol=1e-3)
    assert np.all(readings.accel == readings.accel_true) and np.all(readings.gyro_bias == 0)


def test_stationary_upright_camera():
    t = np.arange(0.0, 5.0, 1 / 30)
    x = np.tile([2.0, 3.0, 1.6], (len(t), 1))
    # camera x east, y down, z north: columns of camera-to-world R
    r = Rotation.from_matrix(np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float))
    q = np.tile(r.as_quat()[[3, 0, 1, 2]], (len(t), 1))
    readings = imu.simulate_imu(t, x, q, imu.ImuSpec.ideal(), seed=0)
    assert np.allclose(readings.accel, [0.0, -imu.STANDARD_GRAVITY, 0.0], atol=1e-9)
    assert np.allclose(readings.gyro, 0.0, atol=1e-12)
    est = imu.dead_reckon(readings)
    assert np.allclose(est.positions, x[0], atol=1e-9)


def test_bmi160_drifts(walk60):
    t, x, q = walk60
    spec = imu.ImuSpec.bmi160()
    readings = imu.simulate_imu(t, x, q, spec, seed=7)
    drift = imu.drift_curves(t, x, q, readings, imu.dead_reckon(readings))
    at = lambda s: int(round(s * spec.rate_hz))  # noqa: E731
    err, yaw = drift.position_error, np.abs(drift.yaw_error_deg)
    assert err[at(60)] > 10.0  # tens of metres after a minute
    assert err[at(60)] > 20 * err[at(10)]  # super-linear growth (t^2..t^3)
    assert yaw[at(60)] > yaw[at(10)]
    # monotone-ish: the running maximum at 60 s is hardly above the final value
    assert err[at(60)] > 0.8 * err[: at(60) + 1].max()
    # noise levels are as specified
    noise = readings.gyro - readings.gyro_true - readings.gyro_bias
    assert noise.std() == pytest.approx(spec.gyro_noise_density * np.sqrt(200.0), rel=0.05)


def test_determinism(walk60):
    t, x, q = walk60
    spec = imu.ImuSpec.bmi160()
    a, b = (imu.simulate_imu(t, x, q, spec, seed=3) for _ in range(2))
    c = imu.simulate_imu(t, x, q, spec, seed=4)
    assert np.array_equal(a.accel, b.accel) and np.array_equal(a.gyro, b.gyro)
    assert not np.array_equal(a.accel, c.accel)
    assert np.array_equal(imu.dead_reckon(a).positions, imu.dead_reckon(b).positions)


def test_monte_carlo(walk60):
    t, x, q = walk(30.0)
    spec = imu.ImuSpec.bmi160()
    mc = imu.monte_carlo_drift(t, x, q, spec, runs=6, seed=11)
    assert mc.position_errors.shape == (6, len(mc.times))
    assert np.all(mc.p10 <= mc.median) and np.all(mc.median <= mc.p90)
    assert mc.median[-1] > 10 * mc.median[int(5 * spec.rate_hz)]
    # run k equals simulate_imu with the k-th spawned seed
    seeds = np.random.SeedSequence(11).spawn(6)
    r2 = imu.simulate_imu(t, x, q, spec, seed=seeds[2])
    d2 = imu.drift_curves(t, x, q, r2, imu.dead_reckon(r2))
    assert np.allclose(d2.position_error, mc.position_errors[2], rtol=1e-9, atol=1e-9)
    assert np.allclose(np.abs(d2.yaw_error_deg), mc.yaw_errors_deg[2], atol=1e-9)


@pytest.mark.parametrize("mutate, match", [
    (lambda t, x, q: (t[::-1], x, q), "strictly increasing"),
    (lambda t, x, q: (np.r_[t[:5], t[4], t[6:]], x, q), "strictly increasing"),
    (lambda t, x, q: (t, x[:-1], q), "shapes mismatch"),
    (lambda t, x, q: (t, x, q[:, :3]), "shapes mismatch"),
    (lambda t, x, q: (t, x, q * 1.01), "unit"),
    (lambda t, x, q: (t, np.where(np.arange(len(t))[:, None] == 3, np.nan, x), q), "NaN"),
    (lambda t, x, q: (t[:3], x[:3], q[:3]), "at least 4"),
])
def test_bad_input(mutate, match):
    t, x, q = walk(2.0)
    with pytest.raises(ValueError, match=match):
        imu.simulate_imu(*mutate(t, x, q), imu.ImuSpec.ideal(), seed=0)


def test_bad_spec():
    with pytest.raises(ValueError, match="rate_hz"):
        imu.ImuSpec.ideal(rate_hz=0.0)
    with pytest.raises(ValueError, match=">= 0"):
        imu.ImuSpec(-1.0, 0, 0, 0, 0, 0)


def test_bmi160_figures():
    spec = imu.ImuSpec.bmi160()
    assert spec.gyro_noise_density == pytest.approx(np.radians(0.007))
    assert spec.accel_noise_density == pytest.approx(180e-6 * 9.80665)
    raw = imu.ImuSpec.bmi160(gyro_bias_dps=3.0, accel_bias_mg=40.0)
    assert raw.gyro_bias_sigma == pytest.approx(np.radians(3.0))
    assert raw.accel_bias_sigma == pytest.approx(0.04 * 9.80665)


def test_bmi160_uses_datasheet_table():
    spec = imu.ImuSpec.bmi160()
    sheet = {k: v[0] for k, v in imu.BMI160_DATASHEET.items()}
    assert spec.gyro_noise_density == pytest.approx(np.radians(sheet["gyro_noise_density"]))
    assert spec.accel_noise_density == pytest.approx(sheet["accel_noise_density"] * 1e-6 * 9.80665)
    raw = imu.ImuSpec.bmi160(gyro_bias_dps=sheet["gyro_offset"], accel_bias_mg=sheet["accel_offset"])
    assert raw.gyro_bias_sigma == pytest.approx(np.radians(3.0))
    assert all(len(v) == 3 and v[0] > 0 for v in imu.BMI160_DATASHEET.values())


def test_only_keeps_the_named_terms():
    spec = imu.ImuSpec.bmi160(rate_hz=100.0)
    g = spec.only("gyro_bias_sigma")
    assert g.gyro_bias_sigma == spec.gyro_bias_sigma and g.rate_hz == 100.0
    assert all(getattr(g, t) == 0.0 for t in imu.ERROR_TERMS if t != "gyro_bias_sigma")
    assert g.name == "gyro_bias_sigma"
    w = spec.only("accel_noise_density", "gyro_noise_density", name="white noise")
    assert w.name == "white noise" and w.accel_bias_sigma == 0.0
    assert w.accel_noise_density == spec.accel_noise_density
    # all terms kept: the same error model
    assert spec.only(*imu.ERROR_TERMS, name=spec.name) == spec
    with pytest.raises(ValueError, match="unknown"):
        spec.only("rate_hz")
    with pytest.raises(ValueError, match="no error terms"):
        spec.only()


def test_only_zero_terms_draw_no_error():
    t, x, q = walk(5.0)
    spec = imu.ImuSpec.bmi160().only("accel_bias_sigma")
    r = imu.simulate_imu(t, x, q, spec, seed=2)
    assert np.all(r.gyro == r.gyro_true)
    bias = r.accel - r.accel_true
    assert np.allclose(bias, bias[0]) and np.abs(bias[0]).max() > 0  # a constant offset only
