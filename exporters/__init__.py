"""Exporters: the trained encoder to ONNX, dataset features to HDF5, the latent explorer to a static web folder."""

from torch_infogan.exporters.encoder import Encoder, GeneratorExport, output_names
from torch_infogan.exporters.hdf5 import FeatureDataset, export_features, validate_features_file
from torch_infogan.exporters.onnx import export_onnx
from torch_infogan.exporters.web import export_web

__all__ = ["Encoder", "FeatureDataset", "GeneratorExport", "export_features", "export_onnx", "export_web", "output_names",
           "validate_features_file"]
