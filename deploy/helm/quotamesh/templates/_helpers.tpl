{{/* The name of everything: the release name, or "quotamesh" in it. */}}
{{- define "quotamesh.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "quotamesh.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "quotamesh.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* A node's advertised host: <pod>.<peers service>.<namespace>.svc.cluster.local. */}}
{{- define "quotamesh.peerHost" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%d.%s-peers.%s.svc.cluster.local" (include "quotamesh.fullname" $root) (index . 1) (include "quotamesh.fullname" $root) $root.Release.Namespace -}}
{{- end -}}
