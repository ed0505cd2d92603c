# Renders the Helm chart with the Helm SDK (helm-python-sdk), for tests/manifests.rs.
# Usage: render_chart.py CHART_DIR VALUES_JSON NAMESPACE
import json, sys
from helm_python import Chart
chart_dir, values, namespace = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
with Chart.load(chart_dir) as chart:
    out = chart.render(values=values, name="eci-profile", namespace=namespace, is_install=True)
for path in sorted(out):
    text = out[path].strip()
    if text:
        print(f"---\n# Source: {path}\n{text}")
