"""3D per instance from analytic depth scenes (scene3d.py): positions within 1 cm and extents within
2 cm of the exact visible-surface values at ~1 m, in both depth encodings, with noise, holes and
masks bleeding onto the background; size/aspect and encoding problems raise DepthError."""
import numpy as np
import pytest
import scene3d as S
from scene3d import Box, Plane, Sphere

from mobilesam_ros.core.ops.geometry3d import (DepthError, Extract3DConfig, PinholeCamera, depth_to_metres,
                                           extract_instances_3d)

CAM = PinholeCamera(S.FX, S.FY, S.CX, S.CY, S.W, S.H)
POS_TOL, SIZE_TOL = 0.01, 0.02          # the bar: 1 cm position, 2 cm extent, at ~1 m
NOISE_SIGMA_AT_1M = 0.002               # depth noise sigma(z) = 2 mm * z^2 (structured-light-like)
HOLE_FRACTION = 0.2                     # pixels without a return (0 in 16UC1, NaN in 32FC1)
BLEED_PX = 3                            # masks dilated this far onto the background


def encode(depth, encoding):
    """Exact depth (inf = no hit) -> what a driver publishes: uint16 mm (0 = none) / float32 m (NaN)."""
    if encoding == "16UC1":
        return np.where(np.isfinite(depth), np.round(depth * 1000.0), 0).clip(0, 65535).astype(np.uint16)
    return np.where(np.isfinite(depth), depth, np.nan).astype(np.float32)


def flying_pixels(depth):
    """Mixed returns at depth edges (ToF / stereo "flying pixels"): every pixel next to a pixel more
    than 0.1 m nearer takes the mean of its own depth and that nearest neighbour's, so a ring of
    depths halfway between object and background surrounds each object (where bled masks reach)."""
    import cv2

    d = np.where(np.isfinite(depth), depth, 1e3).astype(np.float32)
    nearest = cv2.erode(d, np.ones((3, 3), np.uint8)).astype(np.float64)   # 3x3 minimum
    out = depth.copy()
    edge = nearest < d - 0.1
    out[edge] = (d[edge] + nearest[edge]) / 2
    return out


def degrade(depth, rng, noise=False, holes=False, flying=False):
    d = flying_pixels(depth) if flying else depth.copy()
    if noise:
        d = d + rng.normal(0.0, 1.0, d.shape) * NOISE_SIGMA_AT_1M * np.where(np.isfinite(d), d, 0) ** 2
    if holes:
        d[rng.random(d.shape) < HOLE_FRACTION] = np.inf
    return d


def dilate(mask, px):
    import cv2

    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)).astype(bool)


# a tilted wall 1.6-2.2 m behind two boxes and two spheres around 1 m (the second box and both
# spheres are off-axis: side faces / the perspective rim are part of their visible surface)
WALL = Plane((0.0, -0.3, 1.0), 1.8)
OBJECTS = [Box((-0.10, -0.08, 1.00), (0.10, 0.08, 1.10)),
           Box((0.18, -0.30, 0.90), (0.34, -0.14, 1.00)),
           Sphere((-0.28, 0.16, 1.05), 0.08),
           Sphere((0.27, 0.20, 1.15), 0.10)]


def run(objects, encoding, noise=False, holes=False, bleed=0, depth_hw=None, seed=0, cfg=None,
        flying=False, fx=S.FX, fy=S.FY):
    depth, label = S.render([WALL, *objects], fx=fx, fy=fy)
    masks = [label == k + 1 for k in range(len(objects))]
    truth_pos = [np.median(S.surface_points(depth, m, fx=fx, fy=fy), axis=0) for m in masks]
    truth_box = [o.visible_aabb() for o in objects]
    if bleed:
        masks = [dilate(m, bleed) for m in masks]
    if depth_hw is not None:  # the depth camera at another resolution of the same field of view
        sy, sx = depth_hw[0] / S.H, depth_hw[1] / S.W
        depth, _ = S.render([WALL, *objects], depth_hw[1], depth_hw[0], fx * sx, fy * sy,
                            (S.CX + 0.5) * sx - 0.5, (S.CY + 0.5) * sy - 0.5)
    raw = encode(degrade(depth, np.random.default_rng(seed), noise, holes, flying), encoding)
    cam = PinholeCamera(fx, fy, S.CX, S.CY, S.W, S.H)
    res = extract_instances_3d(S.crops_of(masks), (S.H, S.W), depth_to_metres(raw, encoding), cam, cfg)
    return res, truth_pos, truth_box


def check(res, truth_pos, truth_box, pos_tol=POS_TOL, size_tol=SIZE_TOL):
    assert res.valid.all()
    for k, (p, (lo, hi)) in enumerate(zip(truth_pos, truth_box)):
        assert np.abs(res.position[k] - p).max() <= pos_tol, (k, res.position[k], p)
        assert np.abs(res.size[k] - (hi - lo)).max() <= size_tol, (k, res.size[k], hi - lo)
        assert np.abs(res.box_center[k] - (hi + lo) / 2).max() <= size_tol, (k, res.box_center[k])


# ----------------------------------------------------------------------------- closed-form cases
@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_on_axis_box_face_closed_form(encoding):
    """A box centred on the optical axis: its visible surface is the front face only, so the
    position is the face centre (0, 0, 1.0) and the size (0.2, 0.16, 0)."""
    depth, label = S.render([Plane((0, 0, 1), 2.0), Box((-0.1, -0.08, 1.0), (0.1, 0.08, 1.1))])
    res = extract_instances_3d(S.crops_of([label == 1]), (S.H, S.W),
                               depth_to_metres(encode(depth, encoding), encoding), CAM)
    np.testing.assert_allclose(res.position[0], [0.0, 0.0, 1.0], atol=0.002)
    np.testing.assert_allclose(res.size[0], [0.2, 0.16, 0.0], atol=0.01)
    # the whole face is gated in: pixel count of the face's projection, f * 0.2 x f * 0.16
    assert abs(res.valid_points[0] - (S.FX * 0.2) * (S.FY * 0.16)) < 0.03 * res.valid_points[0]


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_on_axis_sphere_closed_form(encoding):
    """Sphere (0, 0, d), radius r: its image is a disk of normalised radius tan(a) = r/sqrt(d^2-r^2);
    the median pixel lies at radius tan(a)/sqrt(2) and depth increases with the radius, so the
    median depth is the depth of that ray: z(q) = (d - sqrt(d^2 - (1+q^2)(d^2-r^2))) / (1+q^2)."""
    d, r = 1.0, 0.1
    depth, label = S.render([Plane((0, 0, 1), 2.0), Sphere((0, 0, d), r)])
    q = r / np.sqrt(d * d - r * r) / np.sqrt(2)
    z_med = (d - np.sqrt(d * d - (1 + q * q) * (d * d - r * r))) / (1 + q * q)
    res = extract_instances_3d(S.crops_of([label == 1]), (S.H, S.W),
                               depth_to_metres(encode(depth, encoding), encoding), CAM)
    # 5 mm, not 2: the position ignores the eroded rim (mask edges), whose depths are the largest,
    # so on a curved surface it leans towards the front (measured 2.6 mm here)
    np.testing.assert_allclose(res.position[0], [0.0, 0.0, z_med], atol=0.005)
    rim = r * np.sqrt(1 - r * r / (d * d))          # rim circle radius; its plane is at d - r^2/d
    np.testing.assert_allclose(res.size[0], [2 * rim, 2 * rim, (d - r * r / d) - (d - r)], atol=SIZE_TOL)


# ----------------------------------------------------------------------------- the full scene
@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
@pytest.mark.parametrize("noise,holes,bleed", [(False, False, 0), (True, False, 0), (False, True, 0),
                                               (False, False, BLEED_PX), (True, True, BLEED_PX)],
                         ids=["clean", "noise", "holes", "bleed", "noise+holes+bleed"])
def test_scene_positions_and_extents(encoding, noise, holes, bleed):
    check(*run(OBJECTS, encoding, noise, holes, bleed))


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_flying_pixels_at_the_edges_of_bled_masks(encoding):
    """A ring of mixed depths (halfway to the wall) around every object, inside the bled masks:
    neither the position nor the box takes them in."""
    check(*run(OBJECTS, encoding, noise=True, bleed=BLEED_PX, flying=True))


# boxes 0.1 m deep at 1 m whose side faces are ~5 px wide, seen by a camera with fx != fy: the
# face x = 0.092 of the first spans fx * 0.092 * (1 - 1/1.1) = 5.0 px, the face y = 0.122 of the
# second fy * 0.122 * (1 - 1/1.1) = 5.0 px, the third shows faces of 6.5 px (x) and 5.0 px (y).
# Their visible surface reaches z = 1.1 (Box.visible_aabb): a z-extent of 0.1 m, of which the
# eroded masks keep only the nearer part.
NARROW_FX, NARROW_FY = 600.0, 450.0
NARROW = [Box((0.092, -0.06, 1.0), (0.292, 0.06, 1.1)),
          Box((-0.10, 0.122, 1.0), (0.05, 0.27, 1.1)),
          Box((-0.32, -0.30, 1.0), (-0.12, -0.122, 1.1))]


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
@pytest.mark.parametrize("noise,holes,bleed,flying", [
    (False, False, 0, False), (True, False, 0, False), (False, True, 0, False),
    (False, False, BLEED_PX, False), (True, False, BLEED_PX, True), (True, True, BLEED_PX, True)],
    ids=["clean", "noise", "holes", "bleed", "noise+bleed+flying", "noise+holes+bleed+flying"])
def test_narrow_side_faces_keep_their_depth_extent(encoding, noise, holes, bleed, flying):
    res, pos, box = run(NARROW, encoding, noise, holes, bleed, flying=flying, fx=NARROW_FX, fy=NARROW_FY)
    check(res, pos, box)
    assert (np.abs(res.size[:, 2] - 0.1) <= SIZE_TOL).all(), res.size   # the figure, directly


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_narrow_side_faces_at_half_resolution(encoding):
    """At 320x240 a 5 px face is 2.5 depth pixels, 4 cm of depth each: the deepest sample lies
    ~2 cm short of z = 1.1 (the sampling limit; with holes that sample may be missing, so none)."""
    check(*run(NARROW, encoding, noise=True, depth_hw=(240, 320), fx=NARROW_FX, fy=NARROW_FY))


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_depth_at_half_resolution_scales_masks(encoding):
    """Depth 320x240 registered to a 640x480 colour frame (same aspect): masks and K are scaled."""
    check(*run(OBJECTS, encoding, noise=True, holes=True, bleed=BLEED_PX, depth_hw=(240, 320)))


@pytest.mark.parametrize("flying", [False, True], ids=["bleed", "bleed+flying"])
def test_bleeding_without_gating_would_fail(flying):
    """Negative control: without the erosion and with a gate wide enough to let the background in,
    the bled masks drag position and extent away — the scene really tests the robustness."""
    loose = Extract3DConfig(erode_px=0, gap_m=5.0, box_percentile=0.0)
    res, pos, box = run(OBJECTS, "32FC1", bleed=BLEED_PX, cfg=loose, flying=flying)
    with pytest.raises(AssertionError):
        check(res, pos, box)


def test_point_cloud_decimation_and_owners():
    """Points lie on their object's surface; stride s keeps only every s-th row and column."""
    depth, label = S.render([Plane((0, 0, 1), 2.0), Box((-0.1, -0.08, 1.0), (0.1, 0.08, 1.1)),
                             Sphere((0.3, 0.0, 1.2), 0.1)])
    masks = [label == 1, label == 2]
    z = depth_to_metres(encode(depth, "32FC1"), "32FC1")
    full = extract_instances_3d(S.crops_of(masks), (S.H, S.W), z, CAM, point_stride=1)
    dec = extract_instances_3d(S.crops_of(masks), (S.H, S.W), z, CAM, point_stride=4)
    assert len(full.points) == full.valid_points.sum()
    box_pts = full.points[full.point_instance == 0]
    np.testing.assert_allclose(box_pts[:, 2], 1.0, atol=1e-6)
    sph = full.points[full.point_instance == 1]
    np.testing.assert_allclose(np.linalg.norm(sph - [0.3, 0.0, 1.2], axis=1), 0.1, atol=2e-3)
    # decimated: the pixels on a 4x4 grid, about 1/16 of them
    u = np.round(dec.points[:, 0] * S.FX / dec.points[:, 2] + S.CX).astype(int)
    v = np.round(dec.points[:, 1] * S.FY / dec.points[:, 2] + S.CY).astype(int)
    assert (u % 4 == 0).all() and (v % 4 == 0).all()
    assert abs(len(dec.points) * 16 - len(full.points)) < 0.05 * len(full.points)


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_thin_object_that_erosion_removes_falls_back_to_the_whole_mask(encoding):
    """A rod 8 mm wide at 1 m (~4 px) has no pixel left after the 2-px erosion: the whole mask is
    used, so it still gets a position: the rod's front face centre (0.1, 0, 1.0), and its extents."""
    rod = Box((0.096, -0.15, 1.0), (0.104, 0.15, 1.02))
    res, pos, box = run([rod], encoding, noise=True, holes=True)
    assert res.valid[0]
    np.testing.assert_allclose(res.position[0], [0.1, 0.0, 1.0], atol=POS_TOL)
    check(res, pos, box)


def test_too_few_points_is_invalid_not_an_error():
    depth, label = S.render([Plane((0, 0, 1), 1.0)])
    z = depth_to_metres(encode(depth, "32FC1"), "32FC1")
    z[100:110, 100:110] = np.nan  # the whole mask is a hole
    m = np.zeros((S.H, S.W), bool)
    m[100:110, 100:110] = True
    res = extract_instances_3d(S.crops_of([m]), (S.H, S.W), z, CAM)
    assert not res.valid[0] and res.valid_points[0] == 0 and np.isnan(res.position[0]).all()
    assert len(extract_instances_3d([], (S.H, S.W), z, CAM)) == 0


# ----------------------------------------------------------------------------- bad depth
def test_other_aspect_is_refused():
    depth, label = S.render([Plane((0, 0, 1), 1.0)])
    z = depth_to_metres(encode(depth[:360], "32FC1"), "32FC1")  # 640x360 for a 640x480 frame
    with pytest.raises(DepthError, match="different aspect ratios"):
        extract_instances_3d(S.crops_of([label == 0]), (S.H, S.W), z, CAM)
    with pytest.raises(DepthError, match="camera_info"):  # CameraInfo of another camera
        extract_instances_3d(S.crops_of([label == 0]), (S.H, S.W),
                             depth_to_metres(encode(depth, "32FC1"), "32FC1"),
                             PinholeCamera(S.FX, S.FY, S.CX, S.CY, 1280, 720))


def test_encodings_and_units():
    mm = np.array([[0, 1000, 25000]], np.uint16)          # none, 1 m, beyond max_depth_m (20 m)
    np.testing.assert_array_equal(depth_to_metres(mm, "16UC1"), np.array([[np.nan, 1.0, np.nan]], np.float32))
    m = np.array([[np.nan, 0.0, np.inf, -1.0, 1.5]], np.float32)
    np.testing.assert_array_equal(depth_to_metres(m, "32FC1"), [[np.nan] * 4 + [1.5]])
    with pytest.raises(DepthError, match="unsupported depth encoding 'rgb8'"):
        depth_to_metres(mm, "rgb8")
    with pytest.raises(DepthError, match="must be"):       # declared 16UC1, carries floats
        depth_to_metres(m, "16UC1")
    # 32FC1 that really holds millimetres: every value is beyond the range, nothing is valid
    assert np.isnan(depth_to_metres(np.full((2, 2), 1000.0, np.float32), "32FC1")).all()


def test_camera_from_k_and_scaling():
    cam = PinholeCamera.from_k([500, 0, 319.5, 0, 400, 239.5, 0, 0, 1], 640, 480)
    half = cam.scaled(320, 240)
    assert (half.fx, half.fy, half.cx, half.cy) == (250, 200, 159.5, 119.5)
    with pytest.raises(DepthError):
        PinholeCamera.from_k([0] * 9, 640, 480)
