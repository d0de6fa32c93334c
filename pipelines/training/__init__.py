"""Training stage. Today: the demo's small radial potential (``radial``, ``fit``,
``demo_model``) and the torch <-> safetensors bridge to the model registry (``torch_io``)."""
