"""The ground floor: frames and gray conversion, ROIs, the error root, atomic writers.

Everything in the package may import from here; nothing here imports from the
rest of the package.
"""
