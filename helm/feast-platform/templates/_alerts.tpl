{{/*
PromQL: the newest Job of one CronJob of the release has failed pods and no success
(kube-state-metrics). A newer run replaces it, so an old failure kept by
failedJobsHistoryLimit does not alert forever. Call with (dict "ns" NAMESPACE "cronJob" NAME).
*/}}
{{- define "feast-platform.cronJobFailedExpr" -}}
{{- $ns := printf "namespace=%q" .ns }}
{{- $runs := printf "kube_job_owner{%s, owner_kind=\"CronJob\", owner_name=%q}" $ns .cronJob }}
{{- $started := printf "(kube_job_status_start_time{%s} and on (namespace, job_name) %s)" $ns $runs -}}
(kube_job_status_failed{ {{- $ns -}} } > 0)
  unless on (namespace, job_name) (kube_job_status_succeeded{ {{- $ns -}} } > 0)
  and on (namespace, job_name)
    ({{ $started }} == on (namespace) group_left () max by (namespace) {{ $started }})
{{- end }}
