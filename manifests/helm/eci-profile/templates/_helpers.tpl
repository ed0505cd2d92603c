{{/*
The name of every object: the release name when it contains the chart's name,
else "<release>-eci-profile" (fullnameOverride replaces it). The release
eci-profile keeps the names of chart 0.1.0 and of the kustomize install.
*/}}
{{- define "eci-profile.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{/*
Labels on the pods that the Deployment, Service, PodDisruptionBudget and
NetworkPolicy select by. The Deployment's selector is immutable: objects
named eci-profile keep the selector of chart 0.1.0, so that they upgrade in
place; any other name also selects by release, so that releases sharing a
namespace do not select each other's pods.
*/}}
{{- define "eci-profile.selectorLabels" -}}
app.kubernetes.io/name: eci-profile
{{- if ne (include "eci-profile.fullname" .) "eci-profile" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "eci-profile.labels" -}}
app.kubernetes.io/name: eci-profile
app.kubernetes.io/part-of: eci-profile
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The webhook's image: registry/repository, then @digest or :tag (appVersion by default). */}}
{{- define "eci-profile.image" -}}
{{- $image := .image -}}
{{- $name := $image.repository -}}
{{- with $image.registry }}{{ $name = printf "%s/%s" . $name }}{{ end -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $name $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $name (default .appVersion $image.tag) -}}
{{- end -}}
{{- end }}

{{/* Namespaces the webhook never sees. */}}
{{- define "eci-profile.excludedNamespaces" -}}
{{- $ns := list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace -}}
{{- concat $ns .Values.excludeNamespaces | uniq | toJson -}}
{{- end }}

{{/*
The webhooks' names in the webhook configurations (the API server's metrics
label them so, and the alerts select by them): "pods.eci-profile.io" for the
release eci-profile, "pods.<fullname>.eci-profile.io" for another.
*/}}
{{- define "eci-profile.webhookDomain" -}}
{{- $fullname := include "eci-profile.fullname" . -}}
{{- if eq $fullname "eci-profile" -}}
eci-profile.io
{{- else -}}
{{- printf "%s.eci-profile.io" $fullname -}}
{{- end -}}
{{- end }}

{{- define "eci-profile.webhookName" -}}
{{- printf "pods.%s" (include "eci-profile.webhookDomain" .) -}}
{{- end }}

{{/*
Refuses what cannot work, with what to do instead; only when installing or
upgrading (`helm lint` does neither, and knows no cluster).
*/}}
{{- define "eci-profile.checks" -}}
{{- if or .Release.IsInstall .Release.IsUpgrade -}}
{{- if and (eq .Release.Namespace "default") .Release.IsInstall -}}
{{- fail "eci-profile does not install into the namespace default: the webhook leaves the pods of its own namespace unchanged, so it would never touch the pods of default. Install into a namespace of its own: helm install eci-profile ... --namespace eci-profile-system --create-namespace" -}}
{{- end -}}
{{- if and (eq .Values.certificate.mode "cert-manager") (not (.Capabilities.APIVersions.Has "cert-manager.io/v1")) -}}
{{- fail "certificate.mode cert-manager needs cert-manager (the API cert-manager.io/v1 is not served): install cert-manager first (https://cert-manager.io/docs/installation/), or set certificate.mode=self-signed. With helm template, pass --api-versions cert-manager.io/v1." -}}
{{- end -}}
{{- if and (or .Values.serviceMonitor.enabled .Values.prometheusRule.enabled) (not (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
{{- fail "serviceMonitor.enabled and prometheusRule.enabled need the Prometheus Operator's CRDs (the API monitoring.coreos.com/v1 is not served): install the Prometheus Operator (or kube-prometheus-stack) first, or set serviceMonitor.enabled=false and prometheusRule.enabled=false. With helm template, pass --api-versions monitoring.coreos.com/v1." -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* test.podLabels as kubectl run's --labels (key=value,...). */}}
{{- define "eci-profile.testPodLabels" -}}
{{- $pairs := list -}}
{{- range $key, $value := .Values.test.podLabels -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end }}
