"""`trtbuild explain`: for every target and part, up to date or why it would be rebuilt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trtbuild import actions, manifest
from trtbuild.backends import get_backend
from trtbuild.build import Options, backend_settings, part_fields, plan_targets
from trtbuild.recipe import load_recipe
from trtbuild.store import Store, default_cache_dir


def explain(recipe_path: str | Path, opts: Options | None = None) -> list[str]:
    """One line per part: "up to date", "would build: ..." or "would rebuild: <field> changed"."""
    opts = opts or Options()
    lock = manifest.read_lock(manifest.lock_path(Path(recipe_path).resolve())) or {}
    store = Store((opts.cache or default_cache_dir()).resolve())
    lines = []
    recipe = load_recipe(recipe_path)
    for planned in plan_targets(recipe_path, opts):
        target = planned.target
        old: dict[str, Any] = next(
            (t for t in lock.get("target", [])
             if t["model"] == target.model.name and t["precision"] == target.precision),
            {},
        )  # fmt: skip
        old_parts = {p["index"]: p for p in old.get("part", [])}
        old_keys = {p["key"] for p in old_parts.values()}
        if old and len(old_parts) != len(planned.plan.parts):
            lines.append(
                f"{target.name}: plan changed ({len(old_parts)} -> {len(planned.plan.parts)} parts)"
            )
        backend = get_backend(planned.backend)
        graph_info = {"weight_digests": planned.weight_digests}
        settings = backend_settings(recipe, target, planned.backend, opts.release)
        fields_list = part_fields(
            target, planned.graph, graph_info, planned.plan, backend, settings
        )
        for part, fields in zip(planned.plan.parts, fields_list):
            key = actions.action_key(fields)
            if key in old_keys or store.get_action(key) is not None:
                reason = "up to date" if key in old_keys else "up to date (in the cache)"
            else:
                previous = old_parts.get(part.index, {}).get("fields")
                reason = actions.explain(previous, actions.field_digests(fields))
            lines.append(f"{target.name} part {part.index}: {reason}")
    return lines
