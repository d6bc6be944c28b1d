"""The planner: split an OpGraph into a chain of engines that each fit the host-memory budget.

Objective, in order: every part's predicted peak <= budget; fewest bytes crossing part boundaries
(each tensor counted once however many consumers it has); fewest parts. Parts are differences of
nested ideals (predecessor-closed sets), so engines run back to back.

    coarsen.py (fusion groups, view chains) -> problem.py (nodes, tensors, weights)
      -> solve.py: exact.py (DP over ideals) while they are few, else interval.py (interval DP
         over several topological orders) + mincut.py (networkx min-cut refinement)
      -> plan.py (parts with their tensors, weights and predicted peaks)

memory.py is the memory model the plans predict peaks with (priors, fits, the lock's pinned one).

May import: trtbuild.errors, trtbuild.recipe, trtbuild.cache, trtbuild.model (the OpGraph),
trtbuild.release (a lock's pinned memory model). Nothing here imports torch.
"""

from __future__ import annotations

from trtbuild.planner.coarsen import coarsen, problem_of
from trtbuild.planner.plan import Part, PartTensor, Plan, plan
from trtbuild.planner.problem import Problem, Solution
from trtbuild.planner.solve import solve

__all__ = [
    "Part",
    "PartTensor",
    "Plan",
    "Problem",
    "Solution",
    "coarsen",
    "plan",
    "problem_of",
    "solve",
]
