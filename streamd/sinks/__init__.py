"""Where detections go: one record per analysed frame."""
