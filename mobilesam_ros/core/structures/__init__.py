"""The data passed between layers: prompts, detections, instances."""
