"""Networks: StyleGAN2, encoders (Style Transformer, pSp, w/o self), latent classifier, edit transformer."""
from .attention import MultiHeadAttention, TransformerBlock
from .edit_transformer import EditTransformer
from .inversion import InversionModel, build_encoder, build_inversion_model, count_encoder_parameters
from .irse import IRSEBackbone, IRSETrunk, load_ir_se50_weights
from .psp import E4E, PSP
from .release import convert_official_state_dict
from .style_transformer import StyleTransformer
from .stylegan2 import Discriminator, Generator, load_rosinality_generator

__all__ = ["Generator", "Discriminator", "load_rosinality_generator",
           "IRSETrunk", "IRSEBackbone", "load_ir_se50_weights", "MultiHeadAttention", "TransformerBlock",
           "InversionModel", "StyleTransformer", "PSP", "E4E", "build_encoder", "build_inversion_model",
           "count_encoder_parameters", "convert_official_state_dict", "EditTransformer"]
