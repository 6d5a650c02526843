{{/* Chart label value. */}}
{{- define "invite-operator-endpoint.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels, then the user's `labels` (e.g. the one an operator's clusterEndpointSelector selects; the common ones are not overridden). */}}
{{- define "invite-operator-endpoint.labels" -}}
helm.sh/chart: {{ include "invite-operator-endpoint.chart" . }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: invite-operator
{{- with omit .Values.labels "helm.sh/chart" "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/version" "app.kubernetes.io/managed-by" "app.kubernetes.io/part-of" }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The namespace of the token Secret. */}}
{{- define "invite-operator-endpoint.secretNamespace" -}}
{{- .Values.secretRef.namespace | default .Release.Namespace }}
{{- end }}

{{/*
What invitations through the endpoint may grant: `allowed` as given, or, when it is null (the
default), deny by default: nothing for UserInvite, only the organization role org_member for
OrgInvitation. Always rendered: an endpoint without `allowed` is never created by this chart.
*/}}
{{- define "invite-operator-endpoint.allowed" -}}
{{- if kindIs "invalid" .Values.allowed }}
{{- if eq .Values.api "OrgInvitation" }}
{{- toYaml (dict "organizationRoles" (list "org_member")) }}
{{- else }}
{{- toYaml dict }}
{{- end }}
{{- else }}
{{- toYaml .Values.allowed }}
{{- end }}
{{- end }}
