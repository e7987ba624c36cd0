{{/*
TLS: the servers' certificate Secret, where pods find it, and the store CAs.
*/}}
{{- define "feast-platform.tlsSecretName" -}}
{{- if .Values.tls.certManager.enabled }}
{{- default (printf "%s-tls" (include "feast-platform.fullname" .)) .Values.tls.existingSecret }}
{{- else }}
{{- required "tls.existingSecret is required with tls.enabled unless tls.certManager.enabled: name a kubernetes.io/tls Secret holding tls.crt, tls.key and ca.crt" .Values.tls.existingSecret }}
{{- end }}
{{- end }}

{{- define "feast-platform.tlsDir" -}}/etc/feast-platform/tls{{- end }}

{{/* http or https: what the servers of the release speak. */}}
{{- define "feast-platform.scheme" -}}{{ .Values.tls.enabled | ternary "https" "http" }}{{- end }}

{{/*
A server container's TLS settings: its certificate and key (tls.enabled only), read again
whenever the mounted Secret changes (src/feature_platform/config/tls.py).
*/}}
{{- define "feast-platform.tlsServerEnv" -}}
{{- if .Values.tls.enabled }}
- name: TLS_CERT_FILE
  value: {{ include "feast-platform.tlsDir" . }}/tls.crt
- name: TLS_KEY_FILE
  value: {{ include "feast-platform.tlsDir" . }}/tls.key
{{- end }}
{{- end }}

{{/* A client of the servers (skew check, helm test): the CA it verifies them against. */}}
{{- define "feast-platform.tlsClientEnv" -}}
{{- if .Values.tls.enabled }}
- name: TLS_CA_FILE
  value: {{ include "feast-platform.tlsDir" . }}/ca.crt
{{- end }}
{{- end }}

{{- define "feast-platform.tlsVolumeMount" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: {{ include "feast-platform.tlsDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "feast-platform.tlsVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "feast-platform.tlsSecretName" . }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* A client's view of the Secret: the CA only, never the servers' key. */}}
{{- define "feast-platform.tlsCaVolume" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "feast-platform.tlsSecretName" . }}
    defaultMode: 0440
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end }}

{{/* The stores' CA files, mounted in every platform pod when a caSecret is named. */}}
{{- define "feast-platform.postgresCaFile" -}}
{{- if .Values.postgres.caSecret }}/etc/feast-platform/postgres-ca/{{ .Values.postgres.caKey }}{{ end }}
{{- end }}

{{- define "feast-platform.redisCaFile" -}}
{{- if .Values.redis.caSecret }}/etc/feast-platform/redis-ca/{{ .Values.redis.caKey }}{{ end }}
{{- end }}

{{- define "feast-platform.storeCaVolumeMounts" -}}
{{- if .Values.postgres.caSecret }}
- name: postgres-ca
  mountPath: /etc/feast-platform/postgres-ca
  readOnly: true
{{- end }}
{{- if .Values.redis.caSecret }}
- name: redis-ca
  mountPath: /etc/feast-platform/redis-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "feast-platform.storeCaVolumes" -}}
{{- if .Values.postgres.caSecret }}
- name: postgres-ca
  secret:
    secretName: {{ .Values.postgres.caSecret }}
    items:
      - key: {{ .Values.postgres.caKey }}
        path: {{ .Values.postgres.caKey }}
{{- end }}
{{- if .Values.redis.caSecret }}
- name: redis-ca
  secret:
    secretName: {{ .Values.redis.caSecret }}
    items:
      - key: {{ .Values.redis.caKey }}
        path: {{ .Values.redis.caKey }}
{{- end }}
{{- end }}

{{/*
Rolls a server that reads its certificate only at start (the offline server: Arrow Flight
cannot load a new one) when the TLS Secret's values change, through the same rolling
update and drain as any change. Helm sees the live Secret on install and upgrade only:
a certificate renewed in place (cert-manager) reaches it at the next upgrade, or at once
with `kubectl rollout restart` (docs/runbooks/rotating-credentials.md).
*/}}
{{- define "feast-platform.tlsSecretChecksum" -}}
{{- if .Values.tls.enabled }}
{{- $live := lookup "v1" "Secret" .Release.Namespace (include "feast-platform.tlsSecretName" .) }}
checksum/tls-secret: {{ (get ($live | default dict) "data") | default dict | toJson | sha256sum }}
{{- end }}
{{- end }}
