"""Tracks per camera: identities across analysed frames, track events, best-face crops."""
