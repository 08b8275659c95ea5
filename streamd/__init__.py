"""streamd: real-time multi-camera face detection daemon."""

__version__ = "0.1.0"
