{{/*
The Deployment of a server clients without credentials call (registry, offline): one pod
shape for both, from the same named templates as the feature server's. Arguments: ctx
(the root), part, values (registryServer or offlineServer), args, ports (name -> port)
probe (the probe handler without its port: {"grpc": {}} or {"tcpSocket": {}}), probePort,
rollOnTlsChange (a server that reads its certificate only at start) and startupFailures
(the startup probe's, every 2 s; 60 unless given).
*/}}
{{- define "feast-platform.clientServerDeployment" -}}
{{- $ctx := .ctx }}
{{- $values := .values }}
{{- $probePort := .probePort }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "feast-platform.fullname" $ctx }}-{{ .part }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "feast-platform.labels" (dict "ctx" $ctx "part" .part) | nindent 4 }}
spec:
  replicas: {{ $values.replicas }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "feast-platform.selectorLabels" (dict "ctx" $ctx "part" .part) | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        {{- include "feast-platform.labels" (dict "ctx" $ctx "part" .part) | nindent 8 }}
        {{- include "feast-platform.storeClientLabel" $ctx | nindent 8 }}
      annotations:
        {{- include "feast-platform.configChecksum" $ctx | nindent 8 }}
        {{- if .rollOnTlsChange }}
        {{- include "feast-platform.tlsSecretChecksum" $ctx | nindent 8 }}
        {{- end }}
    spec:
      {{- include "feast-platform.podIdentity" (dict "ctx" $ctx "part" .part) | nindent 6 }}
      enableServiceLinks: false
      securityContext:
        {{- include "feast-platform.podSecurityContext" $ctx | nindent 8 }}
      {{- with $ctx.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      # SIGTERM stops the server (health NOT_SERVING first, in-flight calls get the grace).
      terminationGracePeriodSeconds: 30
      containers:
        - name: {{ .part }}
          image: {{ include "feast-platform.image" $ctx }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          command: ["feature-platform"]
          args:
            {{- toYaml .args | nindent 12 }}
          ports:
            {{- range $name, $port := .ports }}
            - name: {{ $name }}
              containerPort: {{ $port }}
              protocol: TCP
            {{- end }}
          envFrom:
            {{- include "feast-platform.platformEnvFrom" $ctx | nindent 12 }}
          env:
            {{- include "feast-platform.secretEnv" $ctx | nindent 12 }}
            {{- include "feast-platform.tlsServerEnv" $ctx | nindent 12 }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          startupProbe:
            {{- include "feast-platform.clientServerProbe" (dict "probe" .probe "port" $probePort) | nindent 12 }}
            periodSeconds: 2
            failureThreshold: {{ .startupFailures | default 60 }}
          readinessProbe:
            {{- include "feast-platform.clientServerProbe" (dict "probe" .probe "port" $probePort) | nindent 12 }}
            periodSeconds: 5
            failureThreshold: 2
          livenessProbe:
            {{- include "feast-platform.clientServerProbe" (dict "probe" .probe "port" $probePort) | nindent 12 }}
            periodSeconds: 10
            failureThreshold: 3
          volumeMounts:
            {{- include "feast-platform.platformVolumeMounts" $ctx | nindent 12 }}
            {{- include "feast-platform.identityVolumeMount" $ctx | nindent 12 }}
            {{- include "feast-platform.tlsVolumeMount" $ctx | nindent 12 }}
            {{- with .volumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          securityContext:
            {{- include "feast-platform.containerSecurityContext" $ctx | nindent 12 }}
          resources:
            {{- toYaml $values.resources | nindent 12 }}
      volumes:
        {{- include "feast-platform.platformVolumes" $ctx | nindent 8 }}
        {{- include "feast-platform.identityVolume" $ctx | nindent 8 }}
        {{- include "feast-platform.tlsVolume" $ctx | nindent 8 }}
        {{- with .volumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end }}

{{- define "feast-platform.clientServerProbe" -}}
{{- range $kind, $handler := .probe }}
{{ $kind }}:
  port: {{ $.port }}
  {{- with $handler.scheme }}
  scheme: {{ . }}
  {{- end }}
{{- end }}
timeoutSeconds: 3
{{- end }}

{{/* Its Service: every port of the pod, by name. */}}
{{- define "feast-platform.clientServerService" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "feast-platform.fullname" .ctx }}-{{ .part }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "feast-platform.labels" (dict "ctx" .ctx "part" .part) | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "feast-platform.selectorLabels" (dict "ctx" .ctx "part" .part) | nindent 4 }}
  ports:
    {{- range $name, $port := .ports }}
    - name: {{ $name }}
      port: {{ $port }}
      targetPort: {{ $name }}
      protocol: TCP
    {{- end }}
{{- end }}

{{/* Its NetworkPolicy: in on its ports from ingressFrom (empty: anyone), out to the stores. */}}
{{- define "feast-platform.clientServerNetworkPolicy" -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "feast-platform.fullname" .ctx }}-{{ .part }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "feast-platform.labels" (dict "ctx" .ctx "part" .part) | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "feast-platform.selectorLabels" (dict "ctx" .ctx "part" .part) | nindent 6 }}
  policyTypes: ["Ingress", "Egress"]
  ingress:
    - ports:
        {{- range $name, $port := .ports }}
        - port: {{ $name }}
          protocol: TCP
        {{- end }}
      {{- with .values.ingressFrom }}
      from:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  egress:
    {{- include "feast-platform.storeEgress" .ctx | nindent 4 }}
{{- end }}

{{/* Its PodDisruptionBudget. */}}
{{- define "feast-platform.clientServerPdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "feast-platform.fullname" .ctx }}-{{ .part }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "feast-platform.labels" (dict "ctx" .ctx "part" .part) | nindent 4 }}
spec:
  maxUnavailable: {{ .ctx.Values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "feast-platform.selectorLabels" (dict "ctx" .ctx "part" .part) | nindent 6 }}
{{- end }}

{{/* The arguments of each server's templates. */}}
{{- define "feast-platform.registryServerArgs" -}}
{{- $v := .Values.registryServer }}
{{- $ports := dict "grpc" ($v.port | int) }}
{{- $args := list "serve-registry" .Values.environment "--port" ($v.port | toString) }}
{{- if $v.restPort }}
{{- $_ := set $ports "http" ($v.restPort | int) }}
{{- $args = concat $args (list "--rest-port" ($v.restPort | toString)) }}
{{- else }}
{{- $args = append $args "--no-rest" }}
{{- end }}
{{- /* The kubelet's gRPC probe speaks no TLS: with TLS, the port is probed instead. */}}
{{- $probe := .Values.tls.enabled | ternary (dict "tcpSocket" (dict)) (dict "grpc" (dict)) }}
{{- toJson (dict "part" "registry" "values" $v "args" $args "ports" $ports "probe" $probe "probePort" ($v.port | int)) }}
{{- end }}

{{- define "feast-platform.offlineServerArgs" -}}
{{- $v := .Values.offlineServer }}
{{- $args := list "serve-offline" .Values.environment "--port" ($v.port | toString) }}
{{- /* Training sets are staged in DuckDB files under TMPDIR, a volume of their own. */}}
{{- $work := "/var/lib/feature-platform/offline-work" }}
{{- $env := list (dict "name" "TMPDIR" "value" $work) }}
{{- $mounts := list (dict "name" "work" "mountPath" $work) }}
{{- $volumes := list (dict "name" "work" "emptyDir" (dict "sizeLimit" $v.workDirSize)) }}
{{- $startupFailures := 60 }}
{{- if $v.mirror }}
{{- if not .Values.trainingSet.enabled }}
{{- fail "offlineServer.mirror reads the training set's mirror: set trainingSet.enabled (and trainingSet.mirror) too" }}
{{- end }}
{{- $training := "/var/lib/feature-platform/training" }}
{{- $claim := default (printf "%s-training-set" (include "feast-platform.fullname" .)) .Values.trainingSet.volume.existingClaim }}
{{- $env = append $env (dict "name" "OFFLINE_MIRROR_DIR" "value" (printf "%s/mirror" $training)) }}
{{- $env = append $env (dict "name" "OFFLINE_MIRROR_REFRESH_SECONDS" "value" ($v.mirrorRefreshSeconds | toString)) }}
{{- $mounts = append $mounts (dict "name" "training" "mountPath" $training) }}
{{- $volumes = append $volumes (dict "name" "training" "persistentVolumeClaim" (dict "claimName" $claim)) }}
{{- else if $v.ownMirror.enabled }}
{{- /* The server's own mirror, copied whole before it listens: the startup probe waits. */}}
{{- $own := "/var/lib/feature-platform/offline-mirror" }}
{{- $env = append $env (dict "name" "OFFLINE_MIRROR_DIR" "value" $own) }}
{{- $env = append $env (dict "name" "OFFLINE_MIRROR_REFRESH_SECONDS" "value" ($v.mirrorRefreshSeconds | toString)) }}
{{- $mounts = append $mounts (dict "name" "mirror" "mountPath" $own) }}
{{- if $v.ownMirror.existingClaim }}
{{- $volumes = append $volumes (dict "name" "mirror" "persistentVolumeClaim" (dict "claimName" $v.ownMirror.existingClaim)) }}
{{- else }}
{{- $volumes = append $volumes (dict "name" "mirror" "emptyDir" (dict "sizeLimit" $v.ownMirror.sizeLimit)) }}
{{- /* Gone with the pod: its places in the change log are given up when it stops. */}}
{{- $env = append $env (dict "name" "OFFLINE_MIRROR_RELEASE_AT_EXIT" "value" "true") }}
{{- end }}
{{- $startupFailures = div (add $v.ownMirror.startupSeconds 1) 2 }}
{{- else }}
{{- /* Set even when empty: the image's env file names a directory of its own. */}}
{{- $env = append $env (dict "name" "OFFLINE_MIRROR_DIR" "value" "") }}
{{- end }}
{{- toJson (dict "part" "offline" "values" $v "args" $args "ports" (dict "flight" ($v.port | int)) "probe" (dict "tcpSocket" (dict)) "probePort" ($v.port | int) "rollOnTlsChange" true "env" $env "volumeMounts" $mounts "volumes" $volumes "startupFailures" $startupFailures) }}
{{- end }}
