"""Sampling pipelines (diffusers-style: one file per pipeline, a numbered ``__call__``).

Nothing here imports torch at package import time; import the pipeline module itself,
e.g. ``from core.pipelines.ct_inpaint import CTInpaintPipeline``.
"""
