"""cdtsde: adaptive domain-shift diffusion (CDTSDE) for cross-modality image translation."""

__version__ = "0.1.0"
