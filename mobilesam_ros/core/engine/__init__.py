"""The per-frame engine: embedding cache, predictor (SegAny), SegAny, SegEvery, point grid, box detector, the shared model and the per-camera streams, tracking, follow."""
