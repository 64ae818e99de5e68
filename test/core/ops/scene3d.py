"""Analytic depth scenes for the 3D tests: exact ray casting of planes, axis-aligned boxes and
spheres through a pinhole camera, and the exact extents of each object's visible surface.

Optical frame, metres: x right, y down, z forward; pixel (u, v) centre looks along
d = ((u - cx) / fx, (v - cy) / fy, 1), so a hit at ray parameter t has depth z = t.
Written independently of mobilesam_ros.core.ops.geometry3d (no import of it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FX, FY, CX, CY, W, H = 525.0, 525.0, 319.5, 239.5, 640, 480


def rays(w=W, h=H, fx=FX, fy=FY, cx=CX, cy=CY):
    """(H, W, 3) float64 ray directions with z = 1."""
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    return np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], axis=-1)


@dataclass
class Plane:
    normal: tuple   # n, with n . p = offset for points p of the plane
    offset: float

    def hit(self, d):
        n = np.asarray(self.normal, np.float64)
        den = d @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            t = self.offset / den
        return np.where((den != 0) & (t > 0), t, np.inf)


@dataclass
class Box:
    lo: tuple
    hi: tuple

    def hit(self, d):
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = lo / d, hi / d
        tmin = np.nanmax(np.minimum(t1, t2), axis=-1)
        tmax = np.nanmin(np.maximum(t1, t2), axis=-1)
        return np.where((tmax >= tmin) & (tmin > 0), tmin, np.inf)

    def visible_aabb(self):
        """The visible surface of a convex box seen from the origin: the front face z = lo_z spans
        x, y; a side face is visible iff the camera is on its outer side, and then it reaches
        z = hi_z."""
        lo, hi = np.asarray(self.lo, float), np.asarray(self.hi, float)
        side = lo[0] > 0 or hi[0] < 0 or lo[1] > 0 or hi[1] < 0
        return np.array([lo[0], lo[1], lo[2]]), np.array([hi[0], hi[1], hi[2] if side else lo[2]])


@dataclass
class Sphere:
    center: tuple
    radius: float

    def hit(self, d):
        c = np.asarray(self.center, np.float64)
        dd = np.einsum("...i,...i", d, d)
        dc = d @ c
        disc = dc * dc - dd * (c @ c - self.radius ** 2)
        with np.errstate(invalid="ignore"):
            t = (dc - np.sqrt(disc)) / dd
        return np.where(disc >= 0, t, np.inf)

    def visible_aabb(self):
        """Exact box of the visible cap {c + r m : m . c_hat <= -r/|c|} along each axis e: r if the
        unconstrained extreme m = +-e lies in the cap, else the extreme on the rim circle."""
        c = np.asarray(self.center, float)
        r, dist = self.radius, np.linalg.norm(c)
        ch, a = c / dist, r / dist
        lo, hi = np.empty(3), np.empty(3)
        for k in range(3):
            for sgn in (1.0, -1.0):
                e = np.zeros(3)
                e[k] = sgn
                if e @ ch <= -a:
                    best = 1.0
                else:
                    best = -a * (e @ ch) + np.sqrt(1 - a * a) * np.linalg.norm(e - (e @ ch) * ch)
                if sgn > 0:
                    hi[k] = c[k] + r * best
                else:
                    lo[k] = c[k] - r * best
        return lo, hi


def render(objects, w=W, h=H, fx=FX, fy=FY, cx=CX, cy=CY):
    """-> depth (H, W) float64 metres (inf = nothing), label (H, W) int (index into objects, -1)."""
    d = rays(w, h, fx, fy, cx, cy)
    ts = np.stack([o.hit(d) for o in objects])
    label = np.argmin(ts, axis=0)
    depth = np.take_along_axis(ts, label[None], 0)[0]
    label = np.where(np.isfinite(depth), label, -1)
    return depth, label


def surface_points(depth, mask, fx=FX, fy=FY, cx=CX, cy=CY):
    """(M, 3) exact surface points of the pixels of `mask`."""
    v, u = np.nonzero(mask)
    z = depth[v, u]
    return np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=1)


def crops_of(masks):
    """Tight-box (x0, y0, crop) per (H, W) bool mask, like Instances.crops()."""
    out = []
    for m in masks:
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        out.append((int(x0), int(y0), m[y0:y1, x0:x1]))
    return out
