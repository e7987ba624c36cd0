{{/* Egress every platform pod needs: DNS, and the stores (in-cluster pods or external addresses). */}}
{{- define "feast-platform.storeEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- if .Values.redis.inCluster.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "feast-platform.selectorLabels" (dict "ctx" . "part" "redis") | nindent 10 }}
  ports:
    - port: 6379
      protocol: TCP
{{- else }}
- to:
    {{- range .Values.networkPolicy.externalStoreCidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - port: {{ .Values.redis.port }}
      protocol: TCP
{{- end }}
{{- if .Values.postgres.inCluster.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "feast-platform.selectorLabels" (dict "ctx" . "part" "postgres") | nindent 10 }}
  ports:
    - port: 5432
      protocol: TCP
{{- else }}
- to:
    {{- range .Values.networkPolicy.externalStoreCidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - port: {{ .Values.postgres.port }}
      protocol: TCP
{{- end }}
{{- end }}

{{/* Ingress to a store: only this release's pods that carry the store-client label. */}}
{{- define "feast-platform.storeIngressFrom" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/instance: {{ .Release.Name }}
      {{- include "feast-platform.storeClientLabel" . | nindent 6 }}
{{- end }}

{{/*
Egress to the port of a URL (its own, else 443 for https and 80 for http): to `peers`,
or to any address when there are none.
*/}}
{{- define "feast-platform.urlEgress" -}}
{{- $url := urlParse .url }}
{{- $port := regexFind "[0-9]+$" (regexFind ":[0-9]+$" $url.host) }}
{{- if not $port }}
{{- $port = ternary "443" "80" (eq $url.scheme "https") }}
{{- end }}
- ports:
    - port: {{ $port | int }}
      protocol: TCP
  {{- with .peers }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
