"""Which bundled images the simulator's scenes are made of.

A bottom-layer fact shared by `drivers/sim/scenes.py` (uses them) and
`estimation/sources.py` (holds them out of training, so simulator benchmarks
measure the model on textures it never saw).
"""

SCENE_TEXTURES: tuple[str, ...] = ("brick", "coffee", "grass", "gravel")
"""skimage.data images the built-in scenes use."""
