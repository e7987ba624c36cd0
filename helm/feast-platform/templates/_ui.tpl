{{/*
The arguments of the Feast UI's templates (the same pod shape as the registry and offline
servers'; see _servers.tpl). Its probes GET / on the UI's port: the page is served from
the process itself, so a registry outage shows in the page rather than restarting pods.
*/}}
{{- define "feast-platform.uiArgs" -}}
{{- $v := .Values.ui }}
{{- $args := list "ui" .Values.environment "--port" ($v.port | toString) }}
{{- toJson (dict "part" "ui" "values" $v "args" $args "ports" (dict "http" ($v.port | int)) "probe" (dict "httpGet" (dict "scheme" (include "feast-platform.scheme" . | upper))) "probePort" ($v.port | int)) }}
{{- end }}
