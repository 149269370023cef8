import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { LATENCY_BUCKETS, NAMESPACE } from '../observability/metrics.js'

const subsystem = 'security'

/** Security-server metrics, registered once. Labels are bounded: API, route, status, result. */
export function securityMetrics(registry: Registry) {
  const name = (n: string) => `${NAMESPACE}_${subsystem}_${n}`
  return {
    requests: new Counter({ name: name('requests_total'), help: 'API requests by API, route and status.', labelNames: ['api', 'route', 'status'] as const, registers: [registry] }),
    duration: new Histogram({ name: name('request_duration_seconds'), help: 'API request duration.', labelNames: ['api', 'route'] as const, buckets: LATENCY_BUCKETS, registers: [registry] }),
    enrollments: new Counter({ name: name('enrollments_total'), help: 'Enrollment attempts by result.', labelNames: ['result'] as const, registers: [registry] }),
    sessionOpens: new Counter({ name: name('session_opens_total'), help: 'Session-open attempts by result.', labelNames: ['result'] as const, registers: [registry] }),
    validations: new Counter({ name: name('validations_total'), help: 'Session validations answered to proxies, by result.', labelNames: ['result'] as const, registers: [registry] }),
    backups: new Counter({ name: name('backups_total'), help: 'Scheduled backups by result (success, failure).', labelNames: ['result'] as const, registers: [registry] }),
    backupLastSuccess: new Gauge({ name: name('backup_last_success_timestamp_seconds'), help: 'Unix time of the last successful scheduled backup (at start: of the newest backup file; 0 = none).', registers: [registry] }),
  }
}

export type SecurityMetrics = ReturnType<typeof securityMetrics>
