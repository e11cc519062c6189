"""Validates rendered Kubernetes manifests against the Kubernetes JSON schemas, offline.

Run with the tools' virtualenv (tools/k8s-tools), which holds kubernetes-validate:
``.venv-tools/bin/python tools/k8s_validate.py --kubernetes 1.33.0 rendered.yaml …``.
Objects of custom resources (Strimzi, CloudNativePG, Prometheus Operator) have no schema
in kubernetes-validate; they are skipped by kind and named in the output, never silently.
Prints one JSON document: {"checked": n, "invalid": [...], "skipped": {"Kind": [names]}}.
Exit status 1 when an object is invalid.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import kubernetes_validate
import yaml


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes", required=True, help="Kubernetes version, e.g. 1.33.0")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    checked = 0
    invalid: list[str] = []
    skipped: dict[str, list[str]] = {}
    for path in args.files:
        for document in yaml.safe_load_all(path.read_text()):
            if not document:
                continue
            kind = document.get("kind", "?")
            name = f"{path.name}: {kind}/{document.get('metadata', {}).get('name', '?')}"
            try:
                kubernetes_validate.validate(document, args.kubernetes, strict=True)
                checked += 1
            except kubernetes_validate.SchemaNotFoundError:
                api = document.get("apiVersion", "?")
                skipped.setdefault(f"{kind} ({api})", []).append(name)
            except kubernetes_validate.ValidationError as exc:
                invalid.append(f"{name}: {exc.message} at {'/'.join(map(str, exc.path))}")
    print(json.dumps({"checked": checked, "invalid": invalid, "skipped": skipped}, indent=2))
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
