"""Hardware cameras: OpenCV (UVC webcams, capture cards, files) and GenICam (harvesters)."""
