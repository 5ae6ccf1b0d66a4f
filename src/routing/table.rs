//! The route table: a trie over path segments built once at start-up, so a lookup costs one
//! hash probe per segment of the request path however many routes there are.

use crate::config::{RouteId, RouteSettings};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use std::collections::HashMap;

/// Outcome of matching a request against the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RouteMatch {
    /// The route to use.
    Found(RouteId),
    /// A route owns the path but not the method; `allow` lists what it accepts.
    MethodNotAllowed {
        /// Methods accepted at this path.
        allow: Vec<Method>,
    },
    /// No route owns the path.
    NotFound,
}

#[derive(Debug, Clone)]
struct Candidate {
    id: RouteId,
    host: Option<String>,
    /// `match_headers`: every one must be present with exactly this value.
    headers: Vec<(HeaderName, HeaderValue)>,
    methods: Option<Vec<Method>>,
}

impl Candidate {
    fn headers_match(&self, request: &HeaderMap) -> bool {
        self.headers.iter().all(|(name, value)| request.get_all(name).iter().any(|v| v == value))
    }

    fn allows(&self, method: &Method) -> bool {
        match &self.methods {
            None => true,
            Some(ms) => ms.contains(method) || (method == Method::HEAD && ms.contains(&Method::GET)),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Node {
    children: HashMap<Box<str>, Node>,
    /// Routes ending at this node, most specific first (host, then header matches, then
    /// methods): the request is compared with these few, never with the whole table.
    routes: Vec<Candidate>,
}

/// Prefix routes organised for O(path length) lookup.
#[derive(Debug, Default, Clone)]
pub(crate) struct RouteTable {
    root: Node,
    has_host_routes: bool,
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// Most specific first at every node (host, then more header matches, then methods, then file
/// order); once, after all routes are in, so building stays O(routes × depth).
fn sort_candidates(root: &mut Node) {
    let mut pending = vec![root];
    while let Some(node) = pending.pop() {
        node.routes.sort_by_key(|c| (c.host.is_none(), std::cmp::Reverse(c.headers.len()), c.methods.is_none(), c.id));
        pending.extend(node.children.values_mut());
    }
}

impl RouteTable {
    /// Build the table from validated routes.
    pub(crate) fn new(routes: &[RouteSettings]) -> Self {
        let mut root = Node::default();
        for (id, r) in routes.iter().enumerate() {
            let mut node = &mut root;
            for seg in segments(&r.path) {
                node = node.children.entry(seg.into()).or_default();
            }
            node.routes.push(Candidate {
                id,
                host: r.host.clone(),
                headers: r.match_headers.clone(),
                methods: r.methods.clone(),
            });
        }
        sort_candidates(&mut root);
        RouteTable { root, has_host_routes: routes.iter().any(|r| r.host.is_some()) }
    }

    /// Whether any route names a host (otherwise the Host header need not be examined).
    pub(crate) fn has_host_routes(&self) -> bool {
        self.has_host_routes
    }

    /// Match a normalised path. `host` must be lower-case without port. A route whose
    /// `match_headers` the request does not satisfy is not a candidate (as a host mismatch).
    pub(crate) fn lookup(&self, host: Option<&str>, method: &Method, path: &str, headers: &HeaderMap) -> RouteMatch {
        // Nodes that own routes along the path, shallowest first.
        let mut owners: Vec<&Node> = Vec::new();
        let mut node = &self.root;
        if !node.routes.is_empty() {
            owners.push(node);
        }
        for seg in segments(path) {
            match node.children.get(seg) {
                Some(child) => {
                    node = child;
                    if !node.routes.is_empty() {
                        owners.push(node);
                    }
                }
                None => break,
            }
        }
        let host_ok = |c: &&Candidate| c.host.as_deref().is_none_or(|h| Some(h) == host) && c.headers_match(headers);
        for owner in owners.iter().rev() {
            let mut host_matched = false;
            for c in owner.routes.iter().filter(host_ok) {
                host_matched = true;
                if c.allows(method) {
                    return RouteMatch::Found(c.id);
                }
            }
            if host_matched {
                // The longest prefix owns this path: falling back to a shorter, possibly less
                // protected route for another method would be a bypass.
                let mut allow: Vec<Method> = Vec::new();
                for m in owner.routes.iter().filter(host_ok).flat_map(|c| c.methods.iter().flatten()) {
                    if !allow.contains(m) {
                        allow.push(m.clone());
                    }
                }
                return RouteMatch::MethodNotAllowed { allow };
            }
        }
        RouteMatch::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthMode;

    fn route(path: &str, host: Option<&str>, methods: Option<&[Method]>) -> RouteSettings {
        RouteSettings {
            label: path.into(),
            path: path.into(),
            methods: methods.map(|m| m.to_vec()),
            host: host.map(str::to_string),
            auth: AuthMode::Public,
            max_body: 0,
            ..RouteSettings::default()
        }
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let t = RouteTable::new(&[route("/", None, None), route("/api", None, None), route("/api/admin", None, None)]);
        let get = Method::GET;
        assert_eq!(t.lookup(None, &get, "/api", &HeaderMap::new()), RouteMatch::Found(1));
        assert_eq!(t.lookup(None, &get, "/api/", &HeaderMap::new()), RouteMatch::Found(1));
        assert_eq!(t.lookup(None, &get, "/api/x", &HeaderMap::new()), RouteMatch::Found(1));
        assert_eq!(t.lookup(None, &get, "/apix", &HeaderMap::new()), RouteMatch::Found(0));
        assert_eq!(t.lookup(None, &get, "/api/admin/users", &HeaderMap::new()), RouteMatch::Found(2));
        assert_eq!(t.lookup(None, &get, "/other", &HeaderMap::new()), RouteMatch::Found(0));
    }

    #[test]
    fn host_and_method_specificity() {
        let t = RouteTable::new(&[
            route("/b", None, None),
            route("/b", Some("api.example.com"), Some(&[Method::GET])),
            route("/b", None, Some(&[Method::POST])),
        ]);
        assert_eq!(t.lookup(Some("api.example.com"), &Method::GET, "/b/1", &HeaderMap::new()), RouteMatch::Found(1));
        assert_eq!(t.lookup(Some("api.example.com"), &Method::HEAD, "/b/1", &HeaderMap::new()), RouteMatch::Found(1));
        assert_eq!(t.lookup(Some("api.example.com"), &Method::POST, "/b/1", &HeaderMap::new()), RouteMatch::Found(2));
        assert_eq!(t.lookup(Some("other"), &Method::GET, "/b/1", &HeaderMap::new()), RouteMatch::Found(0));
        assert_eq!(t.lookup(None, &Method::DELETE, "/b", &HeaderMap::new()), RouteMatch::Found(0));
    }

    #[test]
    fn method_mismatch_is_405_not_a_fallback() {
        let t = RouteTable::new(&[route("/", None, None), route("/admin", None, Some(&[Method::GET, Method::PUT]))]);
        assert_eq!(
            t.lookup(None, &Method::POST, "/admin/x", &HeaderMap::new()),
            RouteMatch::MethodNotAllowed { allow: vec![Method::GET, Method::PUT] }
        );
        let only_host = RouteTable::new(&[route("/a", Some("h"), None)]);
        assert_eq!(only_host.lookup(Some("x"), &Method::GET, "/a", &HeaderMap::new()), RouteMatch::NotFound);
    }

    #[test]
    fn header_matches_beat_routes_without_and_never_fall_back_across_prefixes() {
        let mut v2 = route("/api", None, None);
        v2.match_headers = vec![(HeaderName::from_static("x-api-version"), HeaderValue::from_static("2"))];
        let t = RouteTable::new(&[route("/api", None, None), v2, route("/", None, None)]);
        let mut headers = HeaderMap::new();
        assert_eq!(t.lookup(None, &Method::GET, "/api/x", &headers), RouteMatch::Found(0));
        headers.insert("x-api-version", HeaderValue::from_static("2"));
        assert_eq!(t.lookup(None, &Method::GET, "/api/x", &headers), RouteMatch::Found(1));
        headers.insert("x-api-version", HeaderValue::from_static("3"));
        assert_eq!(t.lookup(None, &Method::GET, "/api/x", &headers), RouteMatch::Found(0), "exact values");
        // Only a header route at a prefix: a request without the header goes to the shorter one.
        let mut only = route("/beta", None, None);
        only.match_headers = vec![(HeaderName::from_static("x-beta"), HeaderValue::from_static("yes"))];
        let t = RouteTable::new(&[route("/", None, None), only]);
        assert_eq!(t.lookup(None, &Method::GET, "/beta/x", &HeaderMap::new()), RouteMatch::Found(0));
    }

    #[test]
    fn hundreds_of_routes() {
        let routes: Vec<RouteSettings> = (0..500).map(|i| route(&format!("/svc{i}/v1"), None, None)).collect();
        let t = RouteTable::new(&routes);
        assert_eq!(t.lookup(None, &Method::GET, "/svc499/v1/items", &HeaderMap::new()), RouteMatch::Found(499));
        assert_eq!(t.lookup(None, &Method::GET, "/svc499/v2", &HeaderMap::new()), RouteMatch::NotFound);
    }
}
