// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use crate::*;
use bytes::Bytes;
use http::header;

#[derive(Debug, Clone)]
pub struct CaseHeaderName(Bytes);

impl CaseHeaderName {
    pub fn new(name: String) -> Self {
        CaseHeaderName(name.into())
    }
}

impl CaseHeaderName {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(buf: &[u8]) -> Self {
        CaseHeaderName(Bytes::copy_from_slice(buf))
    }
}

/// A trait that converts into case-sensitive header names.
pub trait IntoCaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName;

    /// The name as the header maps key it, and the case to send it in. By default the cased
    /// name is parsed (which allocates a lowercase copy when it has capitals); a type that holds
    /// the parsed name already hands it over.
    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName), header::InvalidHeaderName>
    where
        Self: Sized,
    {
        let case_header_name = self.into_case_header_name();
        let header_name = HeaderName::from_bytes(case_header_name.as_slice())?;
        Ok((header_name, case_header_name))
    }
}

/// A header name parsed once, with the case to send it in (`X-Request-Id`): inserting or
/// appending it neither parses the name again nor allocates. Made once per name, e.g. in a
/// `static`, by a program that sets the same headers on every request.
#[derive(Debug, Clone)]
pub struct CasedHeaderName {
    name: HeaderName,
    case: CaseHeaderName,
}

impl CasedHeaderName {
    /// `name` in lowercase, as [`HeaderName::from_static`] takes it, and `case`, the same name
    /// as it is to be sent.
    ///
    /// # Panics
    ///
    /// When `name` is not a valid lowercase header name, or `case` differs from it other than
    /// in the case of its letters (at compile time in a `const` or `static`).
    pub const fn from_static(name: &'static str, case: &'static str) -> Self {
        let (lower, cased) = (name.as_bytes(), case.as_bytes());
        assert!(
            lower.len() == cased.len(),
            "`case` must be `name` in another case"
        );
        let mut i = 0;
        while i < lower.len() {
            assert!(
                lower[i] == cased[i].to_ascii_lowercase(),
                "`case` must be `name` in another case"
            );
            i += 1;
        }
        CasedHeaderName {
            name: HeaderName::from_static(name),
            case: CaseHeaderName(Bytes::from_static(cased)),
        }
    }

    /// The name as the header maps key it.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }
}

impl IntoCaseHeaderName for CasedHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self.case
    }

    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName), header::InvalidHeaderName> {
        Ok((self.name, self.case))
    }
}

impl IntoCaseHeaderName for &CasedHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self.case.clone()
    }

    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName), header::InvalidHeaderName> {
        Ok((self.name.clone(), self.case.clone()))
    }
}

impl IntoCaseHeaderName for CaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self
    }
}

impl IntoCaseHeaderName for String {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for &'static str {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(&self))
    }

    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName), header::InvalidHeaderName> {
        let case = CaseHeaderName(titled_header_name(&self));
        Ok((self, case))
    }
}

impl IntoCaseHeaderName for &HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(self))
    }

    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName), header::InvalidHeaderName> {
        Ok((self.clone(), CaseHeaderName(titled_header_name(self))))
    }
}

impl IntoCaseHeaderName for Bytes {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self)
    }
}

fn titled_header_name(header_name: &HeaderName) -> Bytes {
    titled_header_name_str(header_name).map_or_else(
        || Bytes::copy_from_slice(header_name.as_str().as_bytes()),
        |s| Bytes::from_static(s.as_bytes()),
    )
}

pub(crate) fn titled_header_name_str(header_name: &HeaderName) -> Option<&'static str> {
    Some(match *header_name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        // TODO: add more const header here to map to their titled case
        // TODO: automatically upper case the first letter?
        _ => {
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cased_name_is_inserted_as_given_without_parsing() {
        static REQUEST_ID: CasedHeaderName =
            CasedHeaderName::from_static("x-request-id", "X-Request-Id");
        let (name, case) = (&REQUEST_ID).into_header_names().unwrap();
        assert_eq!(name, "x-request-id");
        assert_eq!(case.as_slice(), b"X-Request-Id");
        assert_eq!(REQUEST_ID.name(), "x-request-id");

        let mut req = crate::RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header(&REQUEST_ID, "1").unwrap();
        req.append_header(REQUEST_ID.clone(), "2").unwrap();
        req.insert_header(header::HOST, "a.example").unwrap();
        let mut wire = vec![];
        req.header_to_h1_wire(&mut wire);
        assert_eq!(
            wire,
            b"X-Request-Id: 1\r\nX-Request-Id: 2\r\nHost: a.example\r\n"
        );

        // A parsed name keeps its titled case, and a string is parsed as before.
        let (name, case) = header::CONTENT_TYPE.into_header_names().unwrap();
        assert_eq!(
            (name, case.as_slice()),
            (header::CONTENT_TYPE, &b"Content-Type"[..])
        );
        let (name, case) = "X-Foo".into_header_names().unwrap();
        assert_eq!((name.as_str(), case.as_slice()), ("x-foo", &b"X-Foo"[..]));
        assert!("bad name".into_header_names().is_err());
    }

    #[test]
    #[should_panic(expected = "`case` must be `name` in another case")]
    fn a_cased_name_must_spell_the_name() {
        let _ = CasedHeaderName::from_static("x-request-id", "X-Request-Ix");
    }

    #[test]
    fn test_case_header_name() {
        assert_eq!("FoO".into_case_header_name().as_slice(), b"FoO");
        assert_eq!("FoO".to_string().into_case_header_name().as_slice(), b"FoO");
        assert_eq!(header::SERVER.into_case_header_name().as_slice(), b"Server");
    }
}
