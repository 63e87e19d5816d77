"""Hardware and its stand-ins. Knows nothing above it (no estimation, calibration or CLI)."""
