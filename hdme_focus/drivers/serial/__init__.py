"""Serial focus stages (G-code, Zaber ASCII, Thorlabs APT), their link, poll loop and emulators."""
