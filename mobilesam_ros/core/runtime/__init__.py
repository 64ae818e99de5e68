"""Running the networks: one Backend interface (base.py), torch and ONNX Runtime backends, ONNX export and its cache, the exact fast decoder, the process CPU policy."""
