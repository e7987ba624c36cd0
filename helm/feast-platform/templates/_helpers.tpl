{{/* The chart name, or nameOverride. */}}
{{- define "feast-platform.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name: release name, plus chart name unless included. */}}
{{- define "feast-platform.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Selector labels of one part of the release (server, materialize, redis, postgres, test).
Each part has its own app.kubernetes.io/name, so selectors stay on name + instance and
no workload's selector matches another's pods.
*/}}
{{- define "feast-platform.selectorLabels" -}}
app.kubernetes.io/name: {{ include "feast-platform.name" .ctx }}-{{ .part }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- end }}

{{/* All labels of one part: selector labels plus the descriptive ones. */}}
{{- define "feast-platform.labels" -}}
{{ include "feast-platform.selectorLabels" . }}
app.kubernetes.io/component: {{ .part }}
app.kubernetes.io/part-of: {{ include "feast-platform.name" .ctx }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The label that lets a pod of this release through to Redis and PostgreSQL. */}}
{{- define "feast-platform.storeClientLabel" -}}
feast-platform/store-client: "true"
{{- end }}

{{- define "feast-platform.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Restricted Pod Security, the same for every pod: the image's numeric user. */}}
{{- define "feast-platform.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "feast-platform.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "feast-platform.postgresHost" -}}
{{- if .Values.postgres.inCluster.enabled }}
{{- printf "%s-postgres" (include "feast-platform.fullname" .) }}
{{- else }}
{{- required "postgres.host is required when postgres.inCluster.enabled is false" .Values.postgres.host }}
{{- end }}
{{- end }}

{{- define "feast-platform.redisHost" -}}
{{- if .Values.redis.inCluster.enabled }}
{{- printf "%s-redis" (include "feast-platform.fullname" .) }}
{{- else }}
{{- required "redis.host is required when redis.inCluster.enabled is false" .Values.redis.host }}
{{- end }}
{{- end }}

{{- define "feast-platform.postgresSecretName" -}}
{{- if .Values.postgres.auth.existingSecret }}
{{- .Values.postgres.auth.existingSecret }}
{{- else if .Values.postgres.inCluster.enabled }}
{{- printf "%s-postgres" (include "feast-platform.fullname" .) }}
{{- else }}
{{- fail "postgres.auth.existingSecret is required with an external PostgreSQL: create a Secret holding the password and name it here" }}
{{- end }}
{{- end }}

{{- define "feast-platform.redisSecretName" -}}
{{- if .Values.redis.auth.existingSecret }}
{{- .Values.redis.auth.existingSecret }}
{{- else if .Values.redis.inCluster.enabled }}
{{- printf "%s-redis" (include "feast-platform.fullname" .) }}
{{- else }}
{{- fail "redis.auth.existingSecret is required with an external Redis: create a Secret holding the password (empty for no AUTH) and name it here" }}
{{- end }}
{{- end }}

{{- define "feast-platform.writeTokenSecretName" -}}
{{- default (printf "%s-write-token" (include "feast-platform.fullname" .)) .Values.server.write.existingSecret }}
{{- end }}

{{/* The feature server's Service, as pods of the release in its namespace call it. */}}
{{- define "feast-platform.serverUrl" -}}
{{- printf "%s://%s-server:%v" (include "feast-platform.scheme" .) (include "feast-platform.fullname" .) .Values.server.service.port }}
{{- end }}

{{/*
A password or token kept across upgrades: the live Secret's value when there is one
(lookup sees the cluster on install and upgrade), else a new random one.
*/}}
{{- define "feast-platform.keptSecretValue" -}}
{{- $live := lookup "v1" "Secret" .ctx.Release.Namespace .name }}
{{- if and $live $live.data (hasKey $live.data .key) }}
{{- index $live.data .key }}
{{- else }}
{{- randAlphaNum 32 | b64enc }}
{{- end }}
{{- end }}

{{/*
The stores' passwords every platform container needs: files of the `credentials` volume
(platformVolumes), which the kubelet updates in place when a Secret changes. The platform
reads a file again for every new connection (src/feature_platform/config/credentials.py),
so a rotation reaches running servers and jobs without a restart; a `secretKeyRef`
variable would keep the old value until the pod is replaced. The settings ConfigMap
supplies every other variable feature_store.yaml references.
*/}}
{{- define "feast-platform.credentialsDir" -}}/etc/feast-platform/credentials{{- end }}

{{- define "feast-platform.secretEnv" -}}
- name: POSTGRES_PASSWORD_FILE
  value: {{ include "feast-platform.credentialsDir" . }}/postgres-password
- name: REDIS_PASSWORD_FILE
  value: {{ include "feast-platform.credentialsDir" . }}/redis-password
{{- end }}

{{/* Environment, mounts and volumes shared by every container running the platform. */}}
{{- define "feast-platform.platformEnvFrom" -}}
- configMapRef:
    name: {{ include "feast-platform.fullname" . }}-settings
{{- end }}

{{- define "feast-platform.platformVolumeMounts" -}}
- name: feature-store
  mountPath: /etc/feast
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: credentials
  mountPath: {{ include "feast-platform.credentialsDir" . }}
  readOnly: true
{{- include "feast-platform.storeCaVolumeMounts" . }}
{{- end }}

{{- define "feast-platform.platformVolumes" -}}
- name: feature-store
  configMap:
    name: {{ include "feast-platform.fullname" . }}-feature-store
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- /* A whole-directory mount (no subPath), or the kubelet would not update it. */}}
- name: credentials
  projected:
    defaultMode: 0440
    sources:
      - secret:
          name: {{ include "feast-platform.postgresSecretName" . }}
          items:
            - key: {{ .Values.postgres.auth.passwordKey }}
              path: postgres-password
      - secret:
          name: {{ include "feast-platform.redisSecretName" . }}
          items:
            - key: {{ .Values.redis.auth.passwordKey }}
              path: redis-password
{{- include "feast-platform.storeCaVolumes" . }}
{{- end }}

{{/*
Rolls the pods when their configuration changes. Secrets are not in it: the platform
reads them from their mounted files again when they change (secretEnv, tls.py), except
the offline server's certificate (tlsSecretChecksum).
*/}}
{{- define "feast-platform.configChecksum" -}}
checksum/config: {{ list (include (print .Template.BasePath "/configmap-settings.yaml") .) (include (print .Template.BasePath "/configmap-feature-store.yaml") .) | join "\n" | sha256sum }}
{{- end }}
