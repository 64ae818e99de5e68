"""The per-frame engine: embedding cache, predictor (SegAny), SegEvery, point grid, box detector, pipeline, tracking."""
