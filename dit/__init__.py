"""Text-conditioned video Diffusion Transformer (Cross-DiT), its data stage and training engine.

Modules that do not need torch (``sizes``, ``flops``, ``provenance``, ``atomic``, ``text``) can be
imported by ``analysis`` without importing torch.
"""

__version__ = "0.1.0"
