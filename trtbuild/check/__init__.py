"""The accuracy check's computations, in worker processes: the reference (`reference`: the
model's exported graph at fp32 in PyTorch, part by part), its file format (`data`), and the
comparison of part engines with it (`compare`, no torch). The cached actions that run them are
in trtbuild.orchestrate.check.

May import: trtbuild.errors, trtbuild.recipe, trtbuild.cache, trtbuild.model, trtbuild.backends.
"""
