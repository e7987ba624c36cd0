{{/*
The feature quality job's report: a directory the pod writes, on a claim or an emptyDir.
*/}}

{{- define "feast-platform.qualityReportDir" -}}/var/lib/feature-platform/quality{{- end }}

{{- define "feast-platform.qualityReportFile" -}}
{{- include "feast-platform.qualityReportDir" . }}/quality-report.html
{{- end }}

{{/* The claim the report is kept on, or empty when it is not kept. */}}
{{- define "feast-platform.qualityClaim" -}}
{{- $p := .Values.quality.report.persistence }}
{{- if $p.enabled }}
{{- default (printf "%s-quality" (include "feast-platform.fullname" .)) $p.existingClaim }}
{{- end }}
{{- end }}
