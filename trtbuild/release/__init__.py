"""Release records: what a build depended on and produced. The lock file (`lockfile`), the
inputs and machine facts it pins (`inputs`, `toolchain`), the no-op check that reads only it
(`fastpath`), the provenance manifest (`manifest`) and its signature (`signing`).

May import: trtbuild.errors, trtbuild.recipe, trtbuild.cache, trtbuild.model, trtbuild.backends,
trtbuild.check. The fast path imports no torch, onnx, pydantic or networkx.
"""
