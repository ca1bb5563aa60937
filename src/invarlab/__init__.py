"""invarlab: contrastive self-supervised representations and what they are invariant to."""

__version__ = "0.1.0"
