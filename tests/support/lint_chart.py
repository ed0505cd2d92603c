# Lints the Helm chart with the Helm SDK (helm-python-sdk), for tests/manifests.rs
# and tests/chart.rs.
# Usage: lint_chart.py CHART_DIR [VALUES_JSON]; prints the report as JSON.
import json, sys
from helm_python import lint
values = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
print(json.dumps(lint(sys.argv[1], values, strict=True, kube_version="v1.28.0")))
