"""Inference backends (PyTorch, ONNX Runtime) behind one encode/decode interface."""
