"""Training scripts for the project's models, one module each (e.g. ``train_inpaint``: the CT inpainting UNet).

Importing this package imports no torch; each script does, inside its entry function.
"""
