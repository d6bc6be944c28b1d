"""Stage 2, the model (the torch side, run in worker processes): loading the user's factory
(`frontend`, `hf` for transformers), binding recipe inputs to forward() (`binding`,
`interface`), torch.export to an OpGraph (`graph`, plain data the orchestrator reads too, and
`graphcheck`), weights from checkpoints or seeded init (`weights`, `checkpoint`, `ownstate`),
discovered inputs (`depfile`, `nativefiles`), and each part's ONNX export (`partexport`,
`partdims`, `exporterrors`).

May import: trtbuild.errors, trtbuild.recipe, trtbuild.cache. Only the modules that
tests/test_imports.py lists import torch.
"""
