"""Exporters: the trained encoder to ONNX and dataset features to HDF5."""

from torch_infogan.exporters.encoder import Encoder, GeneratorExport, output_names
from torch_infogan.exporters.hdf5 import FeatureDataset, export_features, validate_features_file
from torch_infogan.exporters.onnx import export_onnx

__all__ = ["Encoder", "FeatureDataset", "GeneratorExport", "export_features", "export_onnx", "output_names",
           "validate_features_file"]
