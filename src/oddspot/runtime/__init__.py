"""Torch-free inference: exported graphs on OpenVINO or ONNX Runtime, with numpy around them."""
