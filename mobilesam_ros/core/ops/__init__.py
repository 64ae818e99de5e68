"""Stateless array operations: image/coordinate transforms, mask post-processing, overlays, 3D geometry."""
