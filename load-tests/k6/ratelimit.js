// A rate-limited route: every answer is 200 or 429, and both carry the RateLimit-* headers;
// 429s carry Retry-After. The expected_response tag keeps 429s out of http_req_failed.
//   k6 run -e BASE=... -e TOKEN=... -e PATH_LIMITED=/limited k6/ratelimit.js
import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';

const BASE = __ENV.BASE || 'http://127.0.0.1:8080';
const PATH = __ENV.PATH_LIMITED || '/limited';
const limited = new Counter('rate_limited');
const allowed = new Counter('allowed');

http.setResponseCallback(http.expectedStatuses(200, 429));

export const options = {
  scenarios: {
    burst: { executor: 'constant-vus', vus: 20, duration: __ENV.DURATION || '15s' },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    http_req_duration: ['p(95)<25'],
    checks: ['rate>0.999'],
    rate_limited: ['count>0'],
  },
};

const params = { headers: { Authorization: `Bearer ${__ENV.TOKEN}` } };

export default function () {
  const res = http.get(`${BASE}${PATH}`, params);
  if (res.status === 429) limited.add(1); else allowed.add(1);
  check(res, {
    '200 or 429': (r) => r.status === 200 || r.status === 429,
    'RateLimit headers': (r) => r.headers['Ratelimit-Limit'] !== undefined && r.headers['Ratelimit-Remaining'] !== undefined && r.headers['Ratelimit-Reset'] !== undefined,
    '429 has Retry-After': (r) => r.status !== 429 || r.headers['Retry-After'] !== undefined,
  });
}
