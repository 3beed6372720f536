"""The pipeline's stages as library functions: the CLI, the demo and notebooks call these.

Each stage reads and writes one run folder (:class:`murakit.layout.RunLayout`) and skips work
that is already complete. Stages that use a trained model take its preprocessing from the
model's card and refuse a prepared cache built differently.
"""
