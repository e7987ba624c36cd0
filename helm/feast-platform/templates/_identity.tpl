{{/*
Identities: who may call the servers (auth.type) and, with kubernetes, the ServiceAccounts
and RBAC behind it. Feast's Kubernetes token parser names a caller by its ServiceAccount
and takes its roles from the roleRef names of the RoleBindings in the server's own
namespace whose subjects list that ServiceAccount.
*/}}

{{/* "true" when callers are ServiceAccounts, else empty. */}}
{{- define "feast-platform.kubernetesAuth" -}}
{{- if eq .Values.auth.type "kubernetes" }}true{{ end }}
{{- end }}

{{/* The parts that check tokens (they call the TokenReview API with kubernetes). */}}
{{- define "feast-platform.tokenCheckingParts" -}}
{{- $parts := list "server" }}
{{- if .Values.registryServer.enabled }}{{ $parts = append $parts "registry" }}{{ end }}
{{- if .Values.offlineServer.enabled }}{{ $parts = append $parts "offline" }}{{ end }}
{{- if .Values.ui.enabled }}{{ $parts = append $parts "ui" }}{{ end }}
{{- toJson $parts }}
{{- end }}

{{/* The parts that run with a ServiceAccount of their own: the servers and the jobs. */}}
{{- define "feast-platform.identityParts" -}}
{{- $parts := include "feast-platform.tokenCheckingParts" . | fromJsonArray }}
{{- if .Values.materialize.enabled }}{{ $parts = append $parts "materialize" }}{{ end }}
{{- if .Values.skewCheck.enabled }}{{ $parts = append $parts "skew-check" }}{{ end }}
{{- if .Values.quality.enabled }}{{ $parts = append $parts "quality" }}{{ end }}
{{- if .Values.trainingSet.enabled }}{{ $parts = append $parts "training-set" }}{{ end }}
{{- if .Values.registryBackup.enabled }}{{ $parts = concat $parts (list "registry-backup" "registry-restore") }}{{ end }}
{{- toJson $parts }}
{{- end }}

{{/* The ServiceAccount of one part. Arguments: ctx, part. */}}
{{- define "feast-platform.serviceAccountName" -}}
{{- printf "%s-%s" (include "feast-platform.fullname" .ctx) .part }}
{{- end }}

{{/*
Pod spec lines of one part: with kubernetes its own ServiceAccount; every other pod keeps
the namespace's default one, and no pod gets the automounted token (see identityVolume).
Arguments: ctx, part.
*/}}
{{- define "feast-platform.podIdentity" -}}
{{- if include "feast-platform.kubernetesAuth" .ctx }}
serviceAccountName: {{ include "feast-platform.serviceAccountName" . }}
{{- end }}
automountServiceAccountToken: false
{{- end }}

{{/*
The ServiceAccount token, CA and namespace at the path the Kubernetes client reads, as a
projected volume the kubelet rotates: only in pods of kubernetes auth, which check
tokens (servers) or send their own (the jobs). The audience is the API server's, so a
TokenReview without audiences accepts it.
*/}}
{{- define "feast-platform.identityVolume" -}}
{{- if include "feast-platform.kubernetesAuth" . }}
- name: service-account
  projected:
    defaultMode: 0440
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: {{ .Values.auth.kubernetes.credentialExpirationSeconds | int64 }}
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                fieldPath: metadata.namespace
{{- end }}
{{- end }}

{{- define "feast-platform.identityVolumeMount" -}}
{{- if include "feast-platform.kubernetesAuth" . }}
- name: service-account
  mountPath: /var/run/secrets/kubernetes.io/serviceaccount
  readOnly: true
{{- end }}
{{- end }}

{{/*
Role name -> the ServiceAccount subjects bound to it: the jobs' (when enabled), the helm
test pod's and the configured clients'.
*/}}
{{- define "feast-platform.roleSubjects" -}}
{{- $k := .Values.auth.kubernetes }}
{{- $subjects := dict }}
{{- range $k.roles }}{{ $_ := set $subjects . list }}{{ end }}
{{- $bound := list }}
{{- if .Values.materialize.enabled }}
{{- $bound = append $bound (dict "name" (include "feast-platform.serviceAccountName" (dict "ctx" . "part" "materialize")) "roles" $k.materializeRoles) }}
{{- end }}
{{- if .Values.skewCheck.enabled }}
{{- $bound = append $bound (dict "name" (include "feast-platform.serviceAccountName" (dict "ctx" . "part" "skew-check")) "roles" $k.skewCheckRoles) }}
{{- end }}
{{- $bound = append $bound (dict "name" (include "feast-platform.serviceAccountName" (dict "ctx" . "part" "test")) "roles" $k.helmTestRoles) }}
{{- range $k.clients }}
{{- $bound = append $bound . }}
{{- end }}
{{- range $bound }}
{{- $name := .name }}
{{- $namespace := default $.Release.Namespace .namespace }}
{{- range .roles }}
{{- if not (hasKey $subjects .) }}
{{- fail (printf "auth.kubernetes: role %s is bound but not in auth.kubernetes.roles" .) }}
{{- end }}
{{- $_ := set $subjects . (append (get $subjects .) (dict "kind" "ServiceAccount" "name" $name "namespace" $namespace)) }}
{{- end }}
{{- end }}
{{- toJson $subjects }}
{{- end }}

{{/*
The settings' checks that need more than the schema, each failing with what to change.
*/}}
{{- define "feast-platform.checkAuth" -}}
{{- $a := .Values.auth }}
{{- if and (eq .Values.environment "prod") (eq $a.type "no_auth") (not $a.allowNoAuth) }}
{{- fail "auth.type no_auth in environment prod lets anyone who reaches a server read and write: set auth.type oidc or kubernetes, or auth.allowNoAuth true to mean it" }}
{{- end }}
{{- if and (eq $a.type "kubernetes") .Values.skewCheck.enabled .Values.skewCheck.serverAuth.existingSecret }}
{{- fail "skewCheck.serverAuth.existingSecret: with auth.type kubernetes the skew check sends its own ServiceAccount's token; leave it empty" }}
{{- end }}
{{- if and (ne $a.type "no_auth") (eq .Values.server.write.mode "token") }}
{{- fail (printf "server.write.mode token is the shared write token of auth.type no_auth; with %s, writes are decided by the feature-writer role: set server.write.mode open (or off)" $a.type) }}
{{- end }}
{{- end }}

{{/* The ServiceAccount of one part. Arguments: ctx, part. */}}
{{- define "feast-platform.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "feast-platform.serviceAccountName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "feast-platform.labels" (dict "ctx" .ctx "part" .part) | nindent 4 }}
# The pods mount a projected token themselves, only where one is needed.
automountServiceAccountToken: false
{{- end }}

{{/* Labels of the RBAC objects, which belong to no one pod. */}}
{{- define "feast-platform.identityLabels" -}}
{{- include "feast-platform.labels" (dict "ctx" . "part" "identity") }}
{{- end }}

{{/* Cluster-scoped names carry the namespace: two releases of one name never collide. */}}
{{- define "feast-platform.clusterName" -}}
{{- printf "%s-%s-%s" .ctx.Release.Namespace (include "feast-platform.fullname" .ctx) .suffix | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The token-checking parts' ServiceAccounts, as RBAC subjects. */}}
{{- define "feast-platform.tokenCheckingSubjects" -}}
{{- range include "feast-platform.tokenCheckingParts" . | fromJsonArray }}
- kind: ServiceAccount
  name: {{ include "feast-platform.serviceAccountName" (dict "ctx" $ "part" .) }}
  namespace: {{ $.Release.Namespace }}
{{- end }}
{{- end }}
