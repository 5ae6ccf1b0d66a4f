// Proxied GET with a JWT on every request.
//   TOKEN=$(siger token -c conf --sub k6 --roles user) k6 run -e BASE=http://127.0.0.1:8080 -e TOKEN=$TOKEN k6/proxy.js
import http from 'k6/http';
import { check } from 'k6';

const BASE = __ENV.BASE || 'http://127.0.0.1:8080';
const PATH = __ENV.PATH_PROXY || '/api/items';

export const options = {
  scenarios: {
    proxy: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 2000),
      timeUnit: '1s',
      duration: __ENV.DURATION || '20s',
      preAllocatedVUs: 50,
      maxVUs: 200,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    http_req_duration: ['p(95)<25', 'p(99)<100'],
    checks: ['rate>0.999'],
  },
};

const params = { headers: { Authorization: `Bearer ${__ENV.TOKEN}` } };

export default function () {
  const res = http.get(`${BASE}${PATH}?vu=${__VU}`, params);
  check(res, {
    'status 200': (r) => r.status === 200,
    'request id returned': (r) => (r.headers['X-Request-Id'] || '').length > 0,
  });
}
