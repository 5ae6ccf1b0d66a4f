//! Variable resolution engine.

use super::{RequestData, ResponseData, TxCollection};
use crate::parser::{Selection, VariableName, VariableSpec, XmlTarget};
use once_cell::sync::Lazy;
use regex::Regex;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Compile a regex written in rule text (an `ARGS:/.../` selection or a
/// `!ARGS:/.../` exclusion), once per pattern.
///
/// These used to be compiled on every evaluation, once per resolved key for an
/// exclusion. Compiling costs orders of magnitude more than matching: CRS
/// 942431's two `!ARGS_NAMES:/.../` exclusions took ~5.5ms per request on
/// clean traffic, for patterns that never change.
///
/// Patterns come only from loaded rules, so the cache is bounded by the rule
/// set. A pattern that does not compile is cached as `None` and never matches,
/// as before. The regex is shared rather than cloned: a cloned `Regex` shares
/// the compiled program but gets a pool of its own, so every clone built a new
/// search cache (lazy DFA included) on its first use -- once per call here.
fn cached_regex(pattern: &str) -> Option<Arc<Regex>> {
    static CACHE: Lazy<RwLock<HashMap<String, Option<Arc<Regex>>>>> = Lazy::new(Default::default);
    if let Some(hit) = CACHE.read().unwrap_or_else(|e| e.into_inner()).get(pattern) {
        return hit.clone();
    }
    let compiled = Regex::new(pattern).ok().map(Arc::new);
    CACHE
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(pattern.to_string())
        .or_insert(compiled)
        .clone()
}

/// Variable resolver for transaction context.
pub struct VariableResolver<'a> {
    request: &'a RequestData,
    response: &'a ResponseData,
    tx: &'a TxCollection,
    matched_var: Option<&'a str>,
    matched_vars: &'a [(String, String)],
    /// Carried alongside the other resolver inputs for symmetry; no variable
    /// reads it yet (`TX:0`..`TX:9` are served from the TX collection).
    #[allow(dead_code)]
    captures: &'a [String],
}

impl<'a> VariableResolver<'a> {
    /// Create a new resolver.
    pub fn new(
        request: &'a RequestData,
        response: &'a ResponseData,
        tx: &'a TxCollection,
        matched_var: Option<&'a str>,
        matched_vars: &'a [(String, String)],
        captures: &'a [String],
    ) -> Self {
        Self {
            request,
            response,
            tx,
            matched_var,
            matched_vars,
            captures,
        }
    }

    /// Resolve a variable specification to values.
    ///
    /// Each value is paired with its name as ModSecurity writes it
    /// (`ARGS:q`, `REQUEST_URI`). [`resolve_values`](Self::resolve_values) is
    /// the same without copying.
    pub fn resolve(&self, spec: &VariableSpec) -> Vec<(String, String)> {
        self.resolve_values(spec)
            .into_iter()
            .map(|r| (r.name.to_string(), r.value.into_owned()))
            .collect()
    }

    /// Resolve a variable specification to values borrowed from the
    /// transaction, with their names kept in parts.
    ///
    /// A rule is evaluated against every value it targets, and most never
    /// match: formatting a `COLLECTION:key` name and copying each value for
    /// all of them was about half of the instructions a request cost. Names
    /// are assembled only when a value matches or an exclusion asks.
    pub fn resolve_values(&self, spec: &VariableSpec) -> Vec<Resolved<'a>> {
        let mut values = self.resolve_variable(spec.name, &spec.selection);

        // Apply exclusions. A rule's exclusions are attached to each of its
        // variables (`ARGS|REQUEST_COOKIES|!REQUEST_COOKIES:/__utm/`), and the
        // values of one variable all belong to one collection: only the
        // exclusions naming that collection need testing, value by value.
        let Some(collection) = values.first().map(|r| r.name.collection.clone()) else {
            return values;
        };
        let relevant: Vec<&str> = spec
            .exclusions
            .iter()
            .map(String::as_str)
            .filter(|e| {
                let excluded = e.split_once(':').map_or(*e, |(c, _)| c);
                excluded.eq_ignore_ascii_case(&collection)
            })
            .collect();
        if !relevant.is_empty() {
            values.retain(|r| !relevant.iter().any(|e| exclusion_matches(&r.name, e)));
        }
        values
    }

    /// Resolve a variable by name.
    fn resolve_variable(&self, name: VariableName, selection: &Option<Selection>) -> Vec<Resolved<'a>> {
        let request: &'a RequestData = self.request;
        let response: &'a ResponseData = self.response;
        match name {
            // Request variables
            VariableName::RequestUri => scalar("REQUEST_URI", request.uri.as_str()),
            VariableName::RequestUriRaw => scalar("REQUEST_URI_RAW", request.uri_raw.as_str()),
            VariableName::RequestMethod => scalar("REQUEST_METHOD", request.method.as_str()),
            VariableName::RequestProtocol => scalar("REQUEST_PROTOCOL", request.protocol.as_str()),
            VariableName::QueryString => scalar("QUERY_STRING", request.query_string.as_str()),
            VariableName::RequestFilename => scalar("REQUEST_FILENAME", request.path.as_str()),
            VariableName::RequestLine => {
                // The request line as it arrived. CRS 920100 tests this with a
                // negated regex, so leaving it unresolved made that rule match
                // every request rather than none.
                let uri = if request.uri_raw.is_empty() {
                    &request.uri
                } else {
                    &request.uri_raw
                };
                scalar(
                    "REQUEST_LINE",
                    format!("{} {} {}", request.method, uri, request.protocol),
                )
            }
            VariableName::RequestBasename => {
                // Final path segment. ModSecurity splits on both separators, so
                // a Windows-style path does not hide the basename.
                let basename = request.path.rsplit(['/', '\\']).next().unwrap_or("");
                scalar("REQUEST_BASENAME", basename)
            }
            VariableName::ArgsCombinedSize => {
                use super::collection::Collection;
                let size: usize = [&request.args_get, &request.args_post]
                    .iter()
                    .flat_map(|c| c.all())
                    .map(|(name, value)| name.len() + value.len())
                    .sum();
                scalar("ARGS_COMBINED_SIZE", size.to_string())
            }
            VariableName::RequestBody => scalar("REQUEST_BODY", request.body_str()),
            VariableName::RequestBodyLength => {
                scalar("REQUEST_BODY_LENGTH", request.body_length().to_string())
            }

            // Collections
            VariableName::Args => self.resolve_collection_from_all_args(selection),
            VariableName::ArgsGet => {
                self.resolve_collection(&request.args_get, "ARGS_GET", selection)
            }
            VariableName::ArgsPost => {
                self.resolve_collection(&request.args_post, "ARGS_POST", selection)
            }
            VariableName::ArgsNames => self.resolve_collection_names(
                &[&request.args_get, &request.args_post],
                "ARGS_NAMES",
                selection,
            ),
            VariableName::ArgsGetNames => {
                self.resolve_collection_names(&[&request.args_get], "ARGS_GET_NAMES", selection)
            }
            VariableName::ArgsPostNames => {
                self.resolve_collection_names(&[&request.args_post], "ARGS_POST_NAMES", selection)
            }
            VariableName::RequestHeaders => {
                self.resolve_collection_ci(&request.headers, "REQUEST_HEADERS", selection)
            }
            VariableName::RequestHeadersNames => self.resolve_collection_names(
                &[&request.headers],
                "REQUEST_HEADERS_NAMES",
                selection,
            ),
            VariableName::RequestCookies => {
                self.resolve_collection(&request.cookies, "REQUEST_COOKIES", selection)
            }
            VariableName::RequestCookiesNames => self.resolve_collection_names(
                &[&request.cookies],
                "REQUEST_COOKIES_NAMES",
                selection,
            ),

            // Multipart body processor results
            VariableName::MultipartPartHeaders => self.resolve_collection(
                &request.multipart_part_headers,
                "MULTIPART_PART_HEADERS",
                selection,
            ),
            VariableName::Files => self.resolve_collection(&request.files, "FILES", selection),
            VariableName::FilesNames => {
                self.resolve_collection_names(&[&request.files], "FILES_NAMES", selection)
            }
            VariableName::ReqBodyProcessor => {
                if request.body_processor.is_empty() {
                    vec![]
                } else {
                    scalar("REQBODY_PROCESSOR", request.body_processor.as_str())
                }
            }

            // A body the processor could not handle. These resolved to nothing
            // before, so CRS rule 200002 (`SecRule REQBODY_ERROR "!@eq 0"`)
            // could never fire and a rejected body passed unexamined and
            // unreported.
            //
            // REQBODY_ERROR always has a value -- "0" when the body processed
            // cleanly -- because a rule comparing it against 0 must be able to
            // find it. REQBODY_ERROR_MSG is absent unless there is a message,
            // matching ModSecurity.
            VariableName::ReqBodyError | VariableName::ReqBodyProcessorError => {
                let flag = if request.body_error.is_some() { "1" } else { "0" };
                scalar("REQBODY_ERROR", flag)
            }
            VariableName::ReqBodyErrorMsg | VariableName::ReqBodyProcessorErrorMsg => {
                match &request.body_error {
                    Some(msg) => scalar("REQBODY_ERROR_MSG", msg.as_str()),
                    None => vec![],
                }
            }

            // Response variables
            VariableName::ResponseStatus => scalar("RESPONSE_STATUS", response.status.to_string()),
            VariableName::ResponseBody => scalar("RESPONSE_BODY", response.body_str()),
            VariableName::ResponseContentType => {
                scalar("RESPONSE_CONTENT_TYPE", response.content_type.as_str())
            }
            VariableName::ResponseHeaders => {
                self.resolve_collection_ci(&response.headers, "RESPONSE_HEADERS", selection)
            }

            // TX collection
            VariableName::Xml => self.resolve_xml(selection),

            VariableName::Tx => self.resolve_tx_collection(selection),

            // Client/Server info
            VariableName::RemoteAddr => scalar("REMOTE_ADDR", request.client_ip.as_str()),
            VariableName::RemotePort => scalar("REMOTE_PORT", request.client_port.to_string()),
            VariableName::ServerName => scalar("SERVER_NAME", request.server_name.as_str()),
            VariableName::ServerAddr => scalar("SERVER_ADDR", request.server_addr.as_str()),
            VariableName::ServerPort => scalar("SERVER_PORT", request.server_port.to_string()),

            // Matched variables
            VariableName::MatchedVar => match self.matched_var {
                Some(v) => scalar("MATCHED_VAR", v),
                None => vec![],
            },
            VariableName::MatchedVars => self
                .matched_vars
                .iter()
                .map(|(k, v)| Resolved::member("MATCHED_VARS", k.as_str(), v.as_str()))
                .collect(),
            VariableName::MatchedVarName => match self.matched_vars.last() {
                Some((name, _)) => scalar("MATCHED_VAR_NAME", name.as_str()),
                None => vec![],
            },
            VariableName::MatchedVarsNames => self
                .matched_vars
                .iter()
                .map(|(k, _)| Resolved::member("MATCHED_VARS_NAMES", k.as_str(), k.as_str()))
                .collect(),

            // Default - empty
            _ => vec![],
        }
    }

    /// Resolve a collection with optional selection.
    fn resolve_collection(
        &self,
        collection: &'a super::collection::HashMapCollection,
        prefix: &'static str,
        selection: &Option<Selection>,
    ) -> Vec<Resolved<'a>> {
        self.resolve_collection_inner(collection, prefix, selection, false)
    }

    /// Resolve a collection where keys are matched case-insensitively (HTTP headers).
    fn resolve_collection_ci(
        &self,
        collection: &'a super::collection::HashMapCollection,
        prefix: &'static str,
        selection: &Option<Selection>,
    ) -> Vec<Resolved<'a>> {
        self.resolve_collection_inner(collection, prefix, selection, true)
    }

    fn resolve_collection_inner(
        &self,
        collection: &'a super::collection::HashMapCollection,
        prefix: &'static str,
        selection: &Option<Selection>,
        lowercase_key: bool,
    ) -> Vec<Resolved<'a>> {
        use super::collection::Collection;

        match selection {
            Some(Selection::Key(key)) => {
                let lookup = if lowercase_key {
                    key.to_ascii_lowercase()
                } else {
                    key.clone()
                };
                if let Some(values) = collection.get(&lookup) {
                    values
                        .into_iter()
                        .map(|v| Resolved::member(prefix, key.clone(), v))
                        .collect()
                } else {
                    vec![]
                }
            }
            Some(Selection::Regex(pattern)) => {
                if let Some(re) = cached_regex(pattern) {
                    collection
                        .get_regex(&re)
                        .into_iter()
                        .map(|(k, v)| Resolved::member(prefix, k, v))
                        .collect()
                } else {
                    vec![]
                }
            }
            None => collection
                .all()
                .into_iter()
                .map(|(k, v)| Resolved::member(prefix, k, v))
                .collect(),
        }
    }

    /// Resolve an `XML:` target against the flattened XML body.
    ///
    /// The XML body processor flattens element text to `xml.<path>` and
    /// attributes to `xml.<path>.@<name>` in `ARGS`. `XML:/*` and `XML://@*`
    /// are exactly those two sets, so they are answered from the flattening
    /// rather than by evaluating XPath.
    ///
    /// Values are reported under their XPath-style name -- `xml.order.item.@id`
    /// is reported as `XML:/order/item/@id` -- so `%{MATCHED_VAR_NAME}` in a
    /// rule's `logdata` names the node the way the rule addressed it.
    fn resolve_xml(&self, selection: &Option<Selection>) -> Vec<Resolved<'a>> {
        use super::collection::Collection;

        let Some(target) = XmlTarget::from_selection(selection.as_ref()) else {
            // An XPath expression this engine cannot express. Reported when the
            // rules load, so there is nothing to say per request.
            return vec![];
        };

        let request: &'a RequestData = self.request;
        request
            .args_post
            .all()
            .into_iter()
            .filter_map(|(name, value)| {
                let path = name.strip_prefix("xml.")?;
                // An XML element name cannot begin with `@`, so `.@` only ever
                // marks the attribute segment this processor appends.
                let is_attribute = path.contains(".@");
                let wanted = match target {
                    XmlTarget::Elements => !is_attribute,
                    XmlTarget::Attributes => is_attribute,
                    XmlTarget::All => true,
                };
                if !wanted {
                    return None;
                }
                Some(Resolved::member(
                    "XML",
                    format!("/{}", path.replace('.', "/")),
                    value,
                ))
            })
            .collect()
    }

    fn resolve_collection_from_all_args(&self, selection: &Option<Selection>) -> Vec<Resolved<'a>> {
        let request: &'a RequestData = self.request;
        let mut result = self.resolve_collection(&request.args_get, "ARGS", selection);
        let post = self.resolve_collection(&request.args_post, "ARGS", selection);
        if result.is_empty() {
            return post;
        }
        result.extend(post);
        result
    }

    /// Resolve a `*_NAMES` collection: the values are the keys of the backing
    /// collection(s), one entry per stored value (duplicates preserved,
    /// matching ModSecurity).
    fn resolve_collection_names(
        &self,
        collections: &[&'a super::collection::HashMapCollection],
        prefix: &'static str,
        selection: &Option<Selection>,
    ) -> Vec<Resolved<'a>> {
        use super::collection::Collection;

        let mut result = Vec::new();
        for collection in collections {
            for (key, _) in collection.all() {
                let selected = match selection {
                    Some(Selection::Key(sel)) => key.eq_ignore_ascii_case(sel),
                    Some(Selection::Regex(pattern)) => cached_regex(pattern)
                        .map(|re| re.is_match(key))
                        .unwrap_or(false),
                    None => true,
                };
                if selected {
                    result.push(Resolved::member(prefix, key, key));
                }
            }
        }
        result
    }

    /// Resolve TX collection.
    fn resolve_tx_collection(&self, selection: &Option<Selection>) -> Vec<Resolved<'a>> {
        use super::collection::Collection;

        let tx: &'a TxCollection = self.tx;
        match selection {
            Some(Selection::Key(key)) => {
                if let Some(values) = tx.get(key) {
                    values
                        .into_iter()
                        .map(|v| Resolved::member("TX", key.clone(), v))
                        .collect()
                } else {
                    vec![]
                }
            }
            Some(Selection::Regex(pattern)) => {
                if let Some(re) = cached_regex(pattern) {
                    tx.get_regex(&re)
                        .into_iter()
                        .map(|(k, v)| Resolved::member("TX", k, v))
                        .collect()
                } else {
                    vec![]
                }
            }
            None => tx
                .all()
                .into_iter()
                .map(|(k, v)| Resolved::member("TX", k, v))
                .collect(),
        }
    }
}

/// The name of a resolved value: `COLLECTION:key` for a collection member, the
/// variable's name otherwise. Kept in parts, and written out only when needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedName<'a> {
    /// `ARGS`, `REQUEST_HEADERS`, `TX`, `REQUEST_URI`, ...
    pub collection: Cow<'a, str>,
    /// The member's key, for a collection member.
    pub key: Option<Cow<'a, str>>,
}

impl std::fmt::Display for ResolvedName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}:{}", self.collection, key),
            None => f.write_str(&self.collection),
        }
    }
}

/// One value a variable resolved to, borrowed from the transaction where it can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved<'a> {
    /// Its name.
    pub name: ResolvedName<'a>,
    /// The value.
    pub value: Cow<'a, str>,
}

impl<'a> Resolved<'a> {
    /// A value of a variable that is not a collection, or a count.
    pub fn scalar(name: impl Into<Cow<'a, str>>, value: impl Into<Cow<'a, str>>) -> Self {
        Resolved {
            name: ResolvedName {
                collection: name.into(),
                key: None,
            },
            value: value.into(),
        }
    }

    fn member(
        collection: &'static str,
        key: impl Into<Cow<'a, str>>,
        value: impl Into<Cow<'a, str>>,
    ) -> Self {
        Resolved {
            name: ResolvedName {
                collection: Cow::Borrowed(collection),
                key: Some(key.into()),
            },
            value: value.into(),
        }
    }
}

/// A variable that is not a collection resolves to this one value.
fn scalar<'a>(name: &'static str, value: impl Into<Cow<'a, str>>) -> Vec<Resolved<'a>> {
    vec![Resolved::scalar(name, value)]
}

/// Check whether a resolved variable key (e.g. `ARGS:password`) is excluded by
/// a target exclusion (`!TARGET` in a rule's variable list or in
/// `SecRuleUpdateTargetById`).
///
/// Supported exclusion forms, per ModSecurity:
/// - `COLLECTION:key` — excludes that member (key compared case-insensitively);
/// - `COLLECTION:/regex/` — excludes members whose key matches the regex;
/// - `COLLECTION` — excludes the entire collection.
fn exclusion_matches(name: &ResolvedName<'_>, exclusion: &str) -> bool {
    match exclusion.split_once(':') {
        Some((excl_coll, excl_sel)) => {
            let Some(key_member) = name.key.as_deref() else {
                return false;
            };
            if !name.collection.eq_ignore_ascii_case(excl_coll) {
                return false;
            }
            if excl_sel.len() > 2 && excl_sel.starts_with('/') && excl_sel.ends_with('/') {
                cached_regex(&excl_sel[1..excl_sel.len() - 1])
                    .map(|re| re.is_match(key_member))
                    .unwrap_or(false)
            } else {
                key_member.eq_ignore_ascii_case(excl_sel)
            }
        }
        None => name.collection.eq_ignore_ascii_case(exclusion),
    }
}

#[cfg(test)]
mod tests {
    use super::{cached_regex, exclusion_matches, ResolvedName};

    /// Whether the value named `name` (`COLLECTION:key` or a bare name) is excluded.
    fn excluded(name: &str, exclusion: &str) -> bool {
        let name = match name.split_once(':') {
            Some((collection, key)) => ResolvedName {
                collection: collection.into(),
                key: Some(key.into()),
            },
            None => ResolvedName {
                collection: name.into(),
                key: None,
            },
        };
        exclusion_matches(&name, exclusion)
    }

    #[test]
    fn test_cached_regex_compiles_once_and_keeps_invalid_patterns_dead() {
        let a = cached_regex(r"^user_\d+$").expect("valid pattern");
        let b = cached_regex(r"^user_\d+$").expect("valid pattern");
        assert!(a.is_match("user_42") && b.is_match("user_42"));
        // An invalid pattern stays a never-matching selection, cached or not.
        assert!(cached_regex("(unclosed").is_none());
        assert!(cached_regex("(unclosed").is_none());
        assert!(!excluded("ARGS:x", "ARGS:/(unclosed/"));
    }

    #[test]
    fn test_exclusion_exact_key() {
        assert!(excluded("ARGS:password", "ARGS:password"));
        assert!(excluded("ARGS:Password", "ARGS:password"));
        // Must NOT be a prefix/substring match.
        assert!(!excluded("ARGS:password2", "ARGS:password"));
        assert!(!excluded("ARGS:xpassword", "ARGS:password"));
        // Different collection.
        assert!(!excluded(
            "REQUEST_COOKIES:password",
            "ARGS:password"
        ));
    }

    #[test]
    fn test_exclusion_regex_key() {
        // CRS pattern: SecRuleUpdateTargetById 941100 "!REQUEST_COOKIES:/^_ga(?:_\w+)?$/"
        assert!(excluded(
            "REQUEST_COOKIES:_ga_ABC123",
            r"REQUEST_COOKIES:/^_ga(?:_\w+)?$/"
        ));
        assert!(excluded(
            "REQUEST_COOKIES:_ga",
            r"REQUEST_COOKIES:/^_ga(?:_\w+)?$/"
        ));
        assert!(!excluded(
            "REQUEST_COOKIES:session",
            r"REQUEST_COOKIES:/^_ga(?:_\w+)?$/"
        ));
    }

    #[test]
    fn test_exclusion_whole_collection() {
        assert!(excluded("ARGS:anything", "ARGS"));
        assert!(!excluded("ARGS_NAMES:anything", "ARGS"));
    }

    #[test]
    fn values_are_borrowed_and_names_written_on_demand() {
        use super::{RequestData, ResponseData, TxCollection, VariableResolver};
        use std::borrow::Cow;

        let mut request = RequestData::new();
        request.set_uri("/search?q=shoes&page=2");
        request.add_header("Cookie", "__utma=1; session=abc");
        let (response, tx) = (ResponseData::new(), TxCollection::new());
        let resolver = VariableResolver::new(&request, &response, &tx, None, &[], &[]);

        let spec = crate::parser::parse_single_variable("ARGS").expect("ARGS");
        let args = resolver.resolve_values(&spec);
        assert_eq!(args.len(), 2);
        assert!(args.iter().all(|r| matches!(r.value, Cow::Borrowed(_))));
        let mut named = resolver.resolve(&spec);
        named.sort();
        assert_eq!(named, [("ARGS:page".to_string(), "2".to_string()), ("ARGS:q".into(), "shoes".into())]);

        // An exclusion naming another collection leaves these values alone;
        // one naming this collection applies.
        let mut cookies = crate::parser::parse_single_variable("REQUEST_COOKIES").expect("cookies");
        cookies.exclusions = vec!["ARGS:q".into(), "REQUEST_COOKIES:/__utm/".into()];
        let kept: Vec<String> = resolver.resolve(&cookies).into_iter().map(|(n, _)| n).collect();
        assert_eq!(kept, ["REQUEST_COOKIES:session"]);
    }
}
