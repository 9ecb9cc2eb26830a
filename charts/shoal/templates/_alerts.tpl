{{/*
The alert rules of the PrometheusRule. A template of its own so the tests
can render them alone and run `promtool check rules` and `promtool test
rules` on them (tests/rules/).
*/}}
{{- define "shoal.alertGroups" -}}
{{- $rule := .Values.metrics.prometheusRule -}}
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
    - alert: ShoalDeadLetterQueueGrowing
      # Chunks keep failing for good.
      expr: increase(shoal_operator_dead_lettered_chunks[{{ $rule.deadLetterGrowingFor }}]) > 0 and shoal_operator_dead_lettered_chunks > 0
      for: {{ $rule.deadLetterGrowingFor }}
      labels:
        severity: warning
      annotations:
        summary: Dead-letter queues of shoal BatchJobs are growing
        description: '{{ "{{" }} $value {{ "}}" }} more chunks were dead-lettered in the last {{ $rule.deadLetterGrowingFor }}; see `kubectl get bj` (FAILED) and the dead-letter queues.'
    - alert: ShoalBatchJobFailed
      expr: increase(shoal_operator_batchjobs_finished_total{phase="Failed"}[10m]) > 0
      labels:
        severity: warning
      annotations:
        summary: A shoal BatchJob failed
        description: 'More chunks were dead-lettered than its failurePolicy allows, or its upstream failed; `kubectl get bj` and `kubectl describe bj` say which.'
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
{{- end -}}
