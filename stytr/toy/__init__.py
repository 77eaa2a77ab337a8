"""ToyFaces: a procedural face domain with exact labels, its attribute predictor and generator."""
from .faces import Z_DIM, ToyFacesDataset, attribute_mask, attribute_statistics, export, render_faces, sample_z
from .generator import generator_quality
from .predictor import AttributePredictor, PredictorFeatureDistance
from .render import ATTRIBUTE_MASK, ATTRIBUTES, FACTORS, N_FACTORS, binary_factors, labels_z, render_z

__all__ = ["ATTRIBUTES", "ATTRIBUTE_MASK", "FACTORS", "N_FACTORS", "Z_DIM", "AttributePredictor",
           "PredictorFeatureDistance", "ToyFacesDataset", "attribute_mask", "attribute_statistics", "binary_factors", "export",
           "generator_quality", "labels_z", "render_faces", "render_z", "sample_z"]
