from medanomaly.detectors.conv_ae.detector import ConvAutoencoder
from medanomaly.detectors.conv_ae.network import ConvAutoencoderNet

__all__ = ["ConvAutoencoder", "ConvAutoencoderNet"]
