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
