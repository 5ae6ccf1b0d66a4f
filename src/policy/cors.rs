//! CORS (ARCHITECTURE.md §7.4): preflights answered by the gateway before authentication and
//! rate limits (a browser sends them without credentials), CORS headers on every answer of a
//! CORS route for a listed origin — errors included, so a browser can read a 401 or a 429 —
//! and `Vary: Origin` on all of them.

pub use crate::config::{CorsSettings, Origins};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

const ALLOW_ORIGIN: HeaderName = http::header::ACCESS_CONTROL_ALLOW_ORIGIN;

/// `OPTIONS` with `Origin` and `Access-Control-Request-Method`: the method the browser asks
/// about (routing uses it, so a route that lists `GET` owns its preflight).
pub(crate) fn preflight_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !headers.contains_key(http::header::ORIGIN) {
        return None;
    }
    let asked = headers.get(http::header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(asked.as_bytes()).ok()
}

impl CorsSettings {
    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, if it is accepted.
    fn allow_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(http::header::ORIGIN)?;
        match &self.origins {
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::List(list) => {
                list.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes())).then(|| origin.clone())
            }
        }
    }

    /// The headers of the answer to a preflight (204, no body). An origin not listed gets only
    /// `Vary: Origin`: the browser then refuses the request itself.
    pub(crate) fn preflight(&self, headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = vec![(http::header::VARY, HeaderValue::from_static("Origin"))];
        let Some(origin) = self.allow_origin(headers) else { return out };
        out.push((ALLOW_ORIGIN, origin));
        out.push((http::header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone()));
        if let Some(h) = &self.headers {
            out.push((http::header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone()));
        }
        if self.credentials {
            out.push((http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true")));
        }
        if let Some(age) = &self.max_age {
            out.push((http::header::ACCESS_CONTROL_MAX_AGE, age.clone()));
        }
        out
    }

    /// The headers added to any other answer on the route (proxied, cached or the gateway's).
    pub(crate) fn response(&self, headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = vec![(http::header::VARY, HeaderValue::from_static("Origin"))];
        let Some(origin) = self.allow_origin(headers) else { return out };
        out.push((ALLOW_ORIGIN, origin));
        if self.credentials {
            out.push((http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true")));
        }
        if let Some(e) = &self.expose {
            out.push((http::header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone()));
        }
        out
    }
}

/// Add `headers` to a response head: `Vary` is merged with what is there, the CORS headers
/// replace any the backend sent (the gateway's policy is the one browsers must see).
pub(crate) fn apply(resp: &mut pingora::http::ResponseHeader, headers: Vec<(HeaderName, HeaderValue)>) {
    for (name, value) in headers {
        if name == http::header::VARY {
            let present = resp.headers.get_all(http::header::VARY).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.split(',').any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("origin")))
            });
            if !present {
                let _ = resp.append_header(name, value);
            }
        } else {
            let _ = resp.insert_header(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(origins: Origins, credentials: bool) -> CorsSettings {
        CorsSettings {
            origins,
            methods: HeaderValue::from_static("GET, POST"),
            headers: Some(HeaderValue::from_static("Authorization, Content-Type")),
            expose: Some(HeaderValue::from_static("X-Request-Id")),
            credentials,
            max_age: Some(HeaderValue::from_static("600")),
        }
    }

    fn request(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::ORIGIN, HeaderValue::from_str(origin).expect("origin"));
        h.insert(http::header::ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static("POST"));
        h
    }

    #[test]
    fn preflights_are_recognised_by_origin_and_requested_method() {
        assert_eq!(preflight_method(&Method::OPTIONS, &request("https://app.example.com")), Some(Method::POST));
        assert_eq!(preflight_method(&Method::GET, &request("https://app.example.com")), None);
        assert_eq!(preflight_method(&Method::OPTIONS, &HeaderMap::new()), None, "a plain OPTIONS is proxied");
    }

    #[test]
    fn listed_origins_get_the_headers_others_only_vary() {
        let s = settings(Origins::List(vec![HeaderValue::from_static("https://app.example.com")]), true);
        let ok = s.preflight(&request("https://app.example.com"));
        let get = |h: &[(HeaderName, HeaderValue)], n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get(&ok, "access-control-allow-origin").expect("origin"), "https://app.example.com");
        assert_eq!(get(&ok, "access-control-allow-credentials").expect("credentials"), "true");
        assert_eq!(get(&ok, "access-control-max-age").expect("max age"), "600");
        assert_eq!(get(&ok, "vary").expect("vary"), "Origin");
        let other = s.preflight(&request("https://evil.example.com"));
        assert_eq!(other.len(), 1);
        let resp = s.response(&request("https://app.example.com"));
        assert_eq!(get(&resp, "access-control-expose-headers").expect("expose"), "X-Request-Id");
        let any = settings(Origins::Any, false).response(&request("https://x.test"));
        assert_eq!(get(&any, "access-control-allow-origin").expect("any"), "*");
    }

    #[test]
    fn vary_is_merged_not_duplicated() {
        let mut resp = pingora::http::ResponseHeader::build(200, None).expect("response");
        resp.insert_header("Vary", "Accept-Encoding").expect("vary");
        let s = settings(Origins::Any, false);
        apply(&mut resp, s.response(&request("https://x.test")));
        apply(&mut resp, s.response(&request("https://x.test")));
        let vary: Vec<_> = resp.headers.get_all("vary").iter().collect();
        assert_eq!(vary, vec!["Accept-Encoding", "Origin"]);
    }
}
