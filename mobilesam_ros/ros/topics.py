"""Topic names of one camera: the pattern every input and output of the node follows.

One camera (the `cameras` parameter unset or empty): inputs `image`, `prompt`, ... and outputs
`~/instances`, ... as they always were. Cameras [front, rear]: camera `front` reads
`front/image`, `front/prompt`, ... and publishes `~/front/instances`, ... (inputs relative, so
they remap and follow the node's namespace; outputs private, under the node's name).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CameraTopics"]


@dataclass(frozen=True)
class CameraTopics:
    """name: the camera's name ("" for the single unnamed camera)."""

    name: str = ""

    def input(self, base: str) -> str:
        """Relative input topic: `base` or `<name>/base`."""
        return f"{self.name}/{base}" if self.name else base

    def output(self, base: str) -> str:
        """Private output topic (also services): `~/base` or `~/<name>/base`."""
        return f"~/{self.name}/{base}" if self.name else f"~/{base}"

    @property
    def prefix(self) -> str:
        """"<name> " for labels (diagnostics, log lines); "" for the unnamed camera."""
        return f"{self.name} " if self.name else ""
