"""The provenance manifest (in-toto Statement v1 with a SLSA Provenance v1 predicate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trtbuild.cache.atomic import write_text

STATEMENT = "https://in-toto.io/Statement/v1"
SLSA = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://github.com/trtbuild/trtbuild/build/v1"


def provenance(
    recipe_name: str,
    subjects: list[tuple[str, str]],
    params: dict[str, Any],
    tools: dict[str, str],
    deps: list[dict[str, Any]],
    byproducts: list[dict[str, Any]],
    started: str,
    finished: str,
) -> dict[str, Any]:
    """An in-toto Statement with a SLSA Provenance v1 predicate; subjects are the engines."""
    return {
        "_type": STATEMENT,
        "subject": [{"name": name, "digest": {"sha256": sha}} for name, sha in subjects],
        "predicateType": SLSA,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"recipe": recipe_name, **params},
                "internalParameters": {"toolchain": tools},
                "resolvedDependencies": [
                    {"uri": f"file:{d['path']}", "digest": {"sha256": d["sha256"]}} for d in deps
                ],
            },
            "runDetails": {
                "builder": {"id": f"trtbuild@{tools.get('trtbuild', 'dev')}"},
                "metadata": {"startedOn": started, "finishedOn": finished},
                "byproducts": byproducts,
            },
        },
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
