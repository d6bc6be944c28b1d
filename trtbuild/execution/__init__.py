"""Stage 4, processes: typed job messages (`jobs`), the executor that runs each job in a
measured process under its memory share (`executor`), the fork server (`forkserver`), Ray
(`rayexec`) and the job process's entry point (`worker`).

May import: everything below it in the pipeline (recipe, cache, model, backends, check,
release, planner); never trtbuild.orchestrate.
"""
