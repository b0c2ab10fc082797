"""Exporters: the trained encoder to ONNX and dataset features to HDF5."""
