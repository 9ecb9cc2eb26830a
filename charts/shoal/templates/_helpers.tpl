{{/* Name of the chart, cut to 63 characters. */}}
{{- define "shoal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's objects. */}}
{{- define "shoal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "shoal.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "shoal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels selecting the operator pods. */}}
{{- define "shoal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The operator's ServiceAccount. */}}
{{- define "shoal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shoal.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* What the operator may do with the objects of the BatchJobs it runs. */}}
{{- define "shoal.rules" -}}
- apiGroups: ["shoal.dev"]
  resources: ["batchjobs"]
  # patch: finalizer; delete: ttlSecondsAfterFinished
  verbs: ["get", "list", "watch", "patch", "delete"]
- apiGroups: ["shoal.dev"]
  resources: ["batchjobs/status"]
  verbs: ["get", "patch"]
- apiGroups: ["shoal.dev"]
  # owner references with blockOwnerDeletion on the objects it creates
  resources: ["batchjobs/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  # the worker ServiceAccount of each BatchJob (no token, no permissions)
  resources: ["serviceaccounts"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  # why worker pods cannot run (image pull, crash loop), for status and
  # Events; patch: idle-first scale-in's deletion costs
  resources: ["pods"]
  verbs: {{ if .Values.idleFirstScaleIn }}["list", "patch"]{{ else }}["list"]{{ end }}
{{- end -}}
