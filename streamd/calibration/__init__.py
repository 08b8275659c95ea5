"""INT8 calibration: frames from the real cameras, a Q/DQ model, and its report against FP32."""
