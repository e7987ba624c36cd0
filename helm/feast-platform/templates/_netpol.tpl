{{/* Egress of the pods that call both stores: DNS, Redis and PostgreSQL (in-cluster pods or external addresses). */}}
{{- define "feast-platform.storeEgress" -}}
{{ include "feast-platform.dnsEgress" . }}
{{ include "feast-platform.redisEgress" . }}
{{ include "feast-platform.postgresEgress" . }}
{{- end }}

{{- define "feast-platform.dnsEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

{{- define "feast-platform.redisEgress" -}}
- to:
    {{- if .Values.redis.inCluster.enabled }}
    - podSelector:
        matchLabels:
          {{- include "feast-platform.selectorLabels" (dict "ctx" . "part" "redis") | nindent 10 }}
    {{- else }}
    {{- range .Values.networkPolicy.externalStoreCidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
    {{- end }}
  ports:
    - port: {{ .Values.redis.inCluster.enabled | ternary 6379 .Values.redis.port }}
      protocol: TCP
{{- end }}

{{/* PostgreSQL alone, for pods that never call Redis (the training-set job). */}}
{{- define "feast-platform.postgresEgress" -}}
- to:
    {{- if .Values.postgres.inCluster.enabled }}
    - podSelector:
        matchLabels:
          {{- include "feast-platform.selectorLabels" (dict "ctx" . "part" "postgres") | nindent 10 }}
    {{- else }}
    {{- range .Values.networkPolicy.externalStoreCidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
    {{- end }}
  ports:
    - port: {{ .Values.postgres.inCluster.enabled | ternary 5432 .Values.postgres.port }}
      protocol: TCP
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
