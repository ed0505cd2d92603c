{{/* Labels on every object. */}}
{{- define "eci-profile.labels" -}}
app.kubernetes.io/name: eci-profile
app.kubernetes.io/part-of: eci-profile
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Namespaces the webhook never sees. */}}
{{- define "eci-profile.excludedNamespaces" -}}
{{- $ns := list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace -}}
{{- concat $ns .Values.excludeNamespaces | uniq | toJson -}}
{{- end }}

{{/* The webhook's name in the MutatingWebhookConfiguration (the API server's metrics label it so). */}}
{{- define "eci-profile.webhookName" -}}
pods.eci-profile.io
{{- end }}
