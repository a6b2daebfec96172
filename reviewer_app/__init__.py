"""The Gradio app and the ``synthdx`` command line: the only package that imports gradio.

It wires ``core`` (images, generation, metrics) and ``studies`` (reader studies).
"""
