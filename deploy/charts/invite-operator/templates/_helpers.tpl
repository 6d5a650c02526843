{{/* Chart name. */}}
{{- define "invite-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release name + chart name, unless the release name already contains it. */}}
{{- define "invite-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "invite-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "invite-operator.labels" -}}
helm.sh/chart: {{ include "invite-operator.chart" . }}
{{ include "invite-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: invite-operator
{{- end }}

{{/* Selector labels (immutable in the Deployment: never add to them). */}}
{{- define "invite-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "invite-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "invite-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "invite-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: [registry/]repository, then @digest when set, else :tag (default: the
appVersion). */}}
{{- define "invite-operator.image" -}}
{{- $repository := .Values.image.repository }}
{{- with .Values.image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The RBAC rules of files/rbac-rules.yaml, as a dict of rule lists. */}}
{{- define "invite-operator.rbacRules" -}}
{{- $rules := .Files.Get "files/rbac-rules.yaml" | fromYaml }}
{{- if or (not $rules) (hasKey $rules "Error") }}
{{- fail (printf "files/rbac-rules.yaml is missing or invalid: %v" $rules) }}
{{- end }}
{{- toYaml $rules }}
{{- end }}

{{/* The app-team rules of files/aggregate-rules.yaml, as a dict of rule lists. */}}
{{- define "invite-operator.aggregateRules" -}}
{{- $rules := .Files.Get "files/aggregate-rules.yaml" | fromYaml }}
{{- if or (not $rules) (hasKey $rules "Error") }}
{{- fail (printf "files/aggregate-rules.yaml is missing or invalid: %v" $rules) }}
{{- end }}
{{- toYaml $rules }}
{{- end }}
