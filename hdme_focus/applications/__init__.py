"""What a defocus map is for, beyond focusing: fuse a focus sweep, magnify or enhance by blur.

    stack.py    a focus sweep (sweep directory or image files) read as one stack
    align.py    ECC alignment of a sweep's frames (a real focus sweep shifts and scales)
    fuse.py     all-in-focus image and depth from focus; estimator-driven or classical
    focus_weight.py  the shared step from a sigma map to "how in focus" (0..1)
    magnify.py  defocus magnification: keep the in-focus part, blur the rest more
    enhance.py  sharpen what is in focus, leave blurred regions (and their noise) alone

Above estimation and records, below the CLI.
"""
