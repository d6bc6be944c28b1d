"""Stage 5, the build: what a caller chooses (`options`), the run and target contexts
(`context`), the graph and state jobs as cached actions (`graphjob`, `statejob`), parts' action
keys (`actions`) and their export and build (`parts`), the check as cached actions (`check`),
publishing (`publish`, `results`), and `build`, `explain`, `verify` on top.

May import: every stage below (recipe, cache, model, backends, check, release, planner,
execution). Only trtbuild.deploy, trtbuild.cli and the package's public API import it.
"""
