{{/*
The registry's backups: a CronJob writing them to a volume, and a suspended CronJob that
restores the newest of them when a Job is made from it. Both run the platform's image
with its settings and secrets, reach DNS and PostgreSQL only, and mount the same claim.
*/}}

{{- define "feast-platform.registryBackupMount" -}}/var/lib/feature-platform/registry-backups{{- end }}

{{- define "feast-platform.registryBackupClaim" -}}
{{- default (printf "%s-registry-backup" (include "feast-platform.fullname" .)) .Values.registryBackup.volume.existingClaim }}
{{- end }}

{{/*
One of the two CronJobs. Arguments: ctx, part, args, schedule, suspend, backoffLimit,
readOnly (the volume's mount).
*/}}
{{- define "feast-platform.registryBackupCronJob" -}}
{{- $ctx := .ctx }}
{{- $b := $ctx.Values.registryBackup }}
{{- $name := printf "%s-%s" (include "feast-platform.fullname" $ctx) .part }}
{{- if gt (len $name) 52 }}
{{- fail (printf "registryBackup: the CronJob name %s is longer than the 52 characters Kubernetes allows: shorten the release name or fullnameOverride" $name) }}
{{- end }}
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ $name }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "feast-platform.labels" (dict "ctx" $ctx "part" .part) | nindent 4 }}
spec:
  schedule: {{ .schedule | quote }}
  timeZone: {{ $b.timeZone | quote }}
  suspend: {{ .suspend }}
  # One at a time: a second backup would prune the volume under the first.
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: {{ $b.startingDeadlineSeconds }}
  successfulJobsHistoryLimit: {{ $b.successfulJobsHistoryLimit }}
  failedJobsHistoryLimit: {{ $b.failedJobsHistoryLimit }}
  jobTemplate:
    metadata:
      labels:
        {{- include "feast-platform.labels" (dict "ctx" $ctx "part" .part) | nindent 8 }}
    spec:
      activeDeadlineSeconds: {{ $b.activeDeadlineSeconds }}
      backoffLimit: {{ .backoffLimit }}
      template:
        metadata:
          labels:
            {{- include "feast-platform.labels" (dict "ctx" $ctx "part" .part) | nindent 12 }}
            {{- include "feast-platform.storeClientLabel" $ctx | nindent 12 }}
          annotations:
            {{- include "feast-platform.configChecksum" $ctx | nindent 12 }}
        spec:
          restartPolicy: Never
          {{- include "feast-platform.podIdentity" (dict "ctx" $ctx "part" .part) | nindent 10 }}
          enableServiceLinks: false
          securityContext:
            {{- include "feast-platform.podSecurityContext" $ctx | nindent 12 }}
          {{- with $ctx.Values.imagePullSecrets }}
          imagePullSecrets:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          containers:
            - name: {{ .part }}
              image: {{ include "feast-platform.image" $ctx }}
              imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
              command: ["feature-platform"]
              args:
                {{- range .args }}
                - {{ toJson . }}
                {{- end }}
              envFrom:
                {{- include "feast-platform.platformEnvFrom" $ctx | nindent 16 }}
              env:
                {{- include "feast-platform.secretEnv" $ctx | nindent 16 }}
              volumeMounts:
                {{- include "feast-platform.platformVolumeMounts" $ctx | nindent 16 }}
                {{- include "feast-platform.identityVolumeMount" $ctx | nindent 16 }}
                - name: backups
                  mountPath: {{ include "feast-platform.registryBackupMount" $ctx }}
                  {{- if .readOnly }}
                  readOnly: true
                  {{- end }}
              securityContext:
                {{- include "feast-platform.containerSecurityContext" $ctx | nindent 16 }}
              resources:
                {{- toYaml $b.resources | nindent 16 }}
          volumes:
            {{- include "feast-platform.platformVolumes" $ctx | nindent 12 }}
            {{- include "feast-platform.identityVolume" $ctx | nindent 12 }}
            - name: backups
              persistentVolumeClaim:
                claimName: {{ include "feast-platform.registryBackupClaim" $ctx }}
                {{- if .readOnly }}
                readOnly: true
                {{- end }}
{{- end }}

{{/* The NetworkPolicy of one of the two. Arguments: ctx, part. */}}
{{- define "feast-platform.registryBackupNetworkPolicy" -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "feast-platform.fullname" .ctx }}-{{ .part }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "feast-platform.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "feast-platform.selectorLabels" . | nindent 6 }}
  # Nothing calls the job; it calls DNS and PostgreSQL, never Redis.
  policyTypes: ["Ingress", "Egress"]
  egress:
    {{- include "feast-platform.dnsEgress" .ctx | nindent 4 }}
    {{- include "feast-platform.postgresEgress" .ctx | nindent 4 }}
{{- end }}
