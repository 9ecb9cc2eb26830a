{{/*
The alert rules of the PrometheusRule. A template of its own so the tests
can render them alone and run `promtool check rules` and `promtool test
rules` on them (tests/rules/).
*/}}
{{- define "shoal.alertGroups" -}}
{{- $rule := .Values.metrics.prometheusRule -}}
{{- $runbook := $rule.runbookUrl -}}
- name: shoal
  rules:
    - alert: ShoalOperatorDown
      # No operator replica leads: nothing reconciles, nothing scales.
      expr: absent(max(shoal_operator_leader) == 1)
      for: 5m
      labels:
        severity: critical
      annotations:
        summary: No shoal operator replica holds the leader Lease
        description: BatchJobs are not reconciled and workers are not scaled.
        runbook_url: {{ $runbook }}#shoaloperatordown
    - alert: ShoalDeadLetterQueueGrowing
      # A job's chunks keep failing for good.
      expr: increase(shoal_batchjob_dead_lettered_chunks[{{ $rule.deadLetterGrowingFor }}]) > 0 and shoal_batchjob_dead_lettered_chunks > 0
      for: {{ $rule.deadLetterGrowingFor }}
      labels:
        severity: warning
      annotations:
        summary: 'The dead-letter queue of BatchJob {{ "{{" }} $labels.namespace {{ "}}" }}/{{ "{{" }} $labels.batchjob {{ "}}" }} is growing'
        description: '{{ "{{" }} $value {{ "}}" }} more chunks were dead-lettered in the last {{ $rule.deadLetterGrowingFor }}; `kubectl describe bj -n {{ "{{" }} $labels.namespace {{ "}}" }} {{ "{{" }} $labels.batchjob {{ "}}" }}` and its failure report say why.'
        runbook_url: {{ $runbook }}#shoaldeadletterqueuegrowing
    - alert: ShoalBatchJobFailed
      # Turned Failed in the last 10 minutes.
      # On the job's labels only: a new leader's series (another pod) for a
      # job that failed long ago is not a new failure.
      expr: shoal_batchjob_phase{phase="Failed"} == 1 unless on (namespace, batchjob) (shoal_batchjob_phase{phase="Failed"} offset 10m == 1)
      labels:
        severity: warning
      annotations:
        summary: 'BatchJob {{ "{{" }} $labels.namespace {{ "}}" }}/{{ "{{" }} $labels.batchjob {{ "}}" }} failed'
        description: 'More chunks were dead-lettered than its failurePolicy allows, or its upstream failed; `kubectl describe bj -n {{ "{{" }} $labels.namespace {{ "}}" }} {{ "{{" }} $labels.batchjob {{ "}}" }}` says which.'
        runbook_url: {{ $runbook }}#shoalbatchjobfailed
    - alert: ShoalBacklogAgeRising
      # Workers receive messages that waited long, and longer and longer.
      expr: |
        histogram_quantile(0.9, sum by (namespace, le) (rate(shoal_message_age_seconds_bucket[5m]))) > {{ $rule.backlogAgeSeconds }}
        and
        deriv(histogram_quantile(0.9, sum by (namespace, le) (rate(shoal_message_age_seconds_bucket[5m])))[15m:1m]) > 0
      for: 10m
      labels:
        severity: warning
      annotations:
        summary: shoal messages wait longer and longer before a worker takes them
        description: 'The 90th percentile of message age at receipt is {{ "{{" }} $value | humanizeDuration {{ "}}" }} and rising in namespace {{ "{{" }} $labels.namespace {{ "}}" }}: raise scaling.maxWorkers or look for slow handlers.'
        runbook_url: {{ $runbook }}#shoalbacklogagerising
{{- end -}}
