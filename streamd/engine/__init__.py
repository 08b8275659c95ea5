"""Inference backends. Each loads the canonical model (see streamd.model.canonical)."""
