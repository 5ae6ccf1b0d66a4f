// Job submission: POST /jobs/submit with a JSON object; every answer must be 202 with a job id.
//   k6 run -e BASE=... -e TOKEN=... k6/jobs.js
import http from 'k6/http';
import { check } from 'k6';

const BASE = __ENV.BASE || 'http://127.0.0.1:8080';

export const options = {
  scenarios: {
    submit: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 500),
      timeUnit: '1s',
      duration: __ENV.DURATION || '20s',
      preAllocatedVUs: 50,
      maxVUs: 200,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    http_req_duration: ['p(95)<50', 'p(99)<200'],
    checks: ['rate>0.999'],
  },
};

const params = {
  headers: { Authorization: `Bearer ${__ENV.TOKEN}`, 'Content-Type': 'application/json' },
  responseCallback: http.expectedStatuses(202),
};

export default function () {
  const body = JSON.stringify({ kind: 'render', frame: __ITER, vu: __VU });
  const res = http.post(`${BASE}/jobs/submit`, body, params);
  check(res, {
    'status 202': (r) => r.status === 202,
    'job id': (r) => r.status === 202 && r.json('job_id') !== undefined,
  });
}
