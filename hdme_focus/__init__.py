"""hdme-focus: focus a camera or microscope from a single frame with HDME-Net."""

__version__ = "0.1.0"
