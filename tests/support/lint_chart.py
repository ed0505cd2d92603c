# Lints the Helm chart with the Helm SDK (helm-python-sdk), for tests/manifests.rs.
# Usage: lint_chart.py CHART_DIR; prints the report as JSON.
import json, sys
from helm_python import lint
print(json.dumps(lint(sys.argv[1], strict=True, kube_version="v1.28.0")))
