"""Stage 1, the recipe: the TOML schema (`schema`: models, inputs, precisions, budgets, targets),
its errors with file and line (`tomlerrors`), the `[model.check]` table (`checkspec`) and byte
sizes ("2GiB", `sizes`).

May import: trtbuild.errors. Nothing here imports torch.
"""
