//! What a TLS connection tells its requests: captured once, when the handshake completes, and
//! attached to the connection's `SslDigest` (Pingora's digest carries no SNI and no client
//! subject of its own).

use super::ListenerCounters;
use async_trait::async_trait;
use http::HeaderValue;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use std::any::Any;
use std::sync::Arc;
use x509_parser::der_parser::asn1_rs::{Any as Asn1Any, Tag, ToDer};
use x509_parser::x509::{RelativeDistinguishedName, X509Name};

/// Facts about one TLS connection, shared by its requests (every stream of an h2 connection).
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    /// Index of the listener in `listen` (stable: listeners change only with a new process).
    pub(crate) listener: usize,
    /// The verified client certificate's subject, ready to forward as `X-Client-Cert-Subject`
    /// (only listeners with `client_ca` verify, and only they ask for certificates).
    pub(crate) client_subject: Option<HeaderValue>,
    /// `TLSv1.3` or `TLSv1.2`, for the access log.
    pub(crate) version: &'static str,
}

/// Pingora's post-handshake hook for one TLS listener.
pub(crate) struct CaptureConnInfo {
    pub(crate) listener: usize,
    pub(crate) counters: Arc<ListenerCounters>,
}

#[async_trait]
impl TlsAccept for CaptureConnInfo {
    async fn handshake_complete_callback(&self, tls: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        self.counters.completed.inc();
        let client_subject = tls.peer_certificate_der().and_then(subject_header);
        let version = match tls.version() {
            Some(v) if v.contains("1_3") || v.contains("1.3") => "TLSv1.3",
            Some(v) if v.contains("1_2") || v.contains("1.2") => "TLSv1.2",
            _ => "TLS",
        };
        Some(Arc::new(ConnInfo { listener: self.listener, client_subject, version }))
    }
}

/// A certificate's subject as a header value, in the string form of RFC 4514 (as nginx's
/// `$ssl_client_s_dn`): RDNs from last to first separated by `,`, the attributes of a multi-valued
/// RDN by `+`, special characters escaped so that a value can never pass for another attribute
/// (`CN=mallory\, O=Admins` is one common name). Bytes a header cannot carry (controls, non-ASCII)
/// are written as `\XX` pairs of their UTF-8 encoding, which RFC 4514 parsers read back.
/// The certificate was verified by rustls before this runs; one x509-parser cannot read is left
/// without a subject rather than failing the connection.
pub(crate) fn subject_header(der: &[u8]) -> Option<HeaderValue> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    HeaderValue::from_str(&rfc4514_name(cert.subject())).ok()
}

/// The RFC 4514 string of a distinguished name.
fn rfc4514_name(name: &X509Name<'_>) -> String {
    let rdns: Vec<&RelativeDistinguishedName<'_>> = name.iter().collect();
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attribute) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attribute.attr_type().to_id_string();
            let value = attribute.attr_value();
            match (attribute_name(&oid), string_value(value)) {
                (Some(short), Some(text)) => {
                    out.push_str(short);
                    out.push('=');
                    out.push_str(&escape_rfc4514_value(&text));
                }
                // RFC 4514 §2.4: a type without a registered short name, or a value without a
                // string form, is written as `#` and the hex of the value's BER encoding.
                (short, _) => {
                    out.push_str(short.unwrap_or(&oid));
                    out.push_str("=#");
                    out.push_str(&hex::encode(value.to_der_vec().unwrap_or_default()));
                }
            }
        }
    }
    out
}

/// The short names RFC 4514 §3 lists, and those of RFC 4519 and RFC 5280 certificates commonly
/// carry (OpenSSL and Go print these too); any other type is written as its dotted OID.
fn attribute_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "2.5.4.5" => "serialNumber",
        "2.5.4.4" => "SN",
        "2.5.4.42" => "givenName",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.12" => "title",
        "2.5.4.17" => "postalCode",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// The text of a directory-string value (`None`: not a string type, or not decodable).
fn string_value(value: &Asn1Any<'_>) -> Option<String> {
    let bytes = value.data;
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString | Tag::VisibleString => {
            std::str::from_utf8(bytes).ok().map(str::to_owned)
        }
        // Teletex in certificates is Latin-1 in practice (as OpenSSL reads it).
        Tag::T61String => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString if bytes.len() % 2 == 0 => {
            char::decode_utf16(bytes.chunks(2).map(|p| u16::from_be_bytes([p[0], p[1]]))).collect::<Result<_, _>>().ok()
        }
        Tag::UniversalString if bytes.len() % 4 == 0 => {
            bytes.chunks(4).map(|q| char::from_u32(u32::from_be_bytes([q[0], q[1], q[2], q[3]]))).collect::<Option<_>>()
        }
        _ => None,
    }
}

/// One attribute value escaped as RFC 4514 §2.4 requires, and restricted to visible ASCII so it
/// is a valid header value: `"` `+` `,` `;` `<` `>` `\` get a backslash, as do a leading `#` or
/// space and a trailing space; NUL, other controls and non-ASCII become `\XX` per UTF-8 byte.
pub(crate) fn escape_rfc4514_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        assert!(content.len() < 128);
        let mut out = vec![tag, content.len() as u8];
        out.extend_from_slice(content);
        out
    }

    /// An AttributeTypeAndValue of type 2.5.4.`last` (CN = 3, O = 10, …).
    fn attribute(last: u8, string_tag: u8, value: &[u8]) -> Vec<u8> {
        let mut seq = tlv(0x06, &[0x55, 0x04, last]);
        seq.extend(tlv(string_tag, value));
        tlv(0x30, &seq)
    }

    fn name(rdns: &[Vec<Vec<u8>>]) -> String {
        let sets: Vec<u8> = rdns.iter().flat_map(|rdn| tlv(0x31, &rdn.concat())).collect();
        let der = tlv(0x30, &sets);
        let (_, name) = X509Name::from_der(&der).unwrap();
        rfc4514_name(&name)
    }

    const UTF8: u8 = 0x0c;

    #[test]
    fn values_cannot_pass_for_other_attributes() {
        assert_eq!(escape_rfc4514_value("mallory, O=Admins"), "mallory\\, O=Admins");
        assert_eq!(escape_rfc4514_value(r#"a+b;c"d"<e>\f"#), r#"a\+b\;c\"d\"\<e\>\\f"#);
        assert_eq!(escape_rfc4514_value("#1 "), "\\#1\\ ");
        assert_eq!(escape_rfc4514_value(" x#y z"), "\\ x#y z");
        assert_eq!(escape_rfc4514_value(" "), "\\ ");
        assert_eq!(escape_rfc4514_value(""), "");
    }

    #[test]
    fn controls_and_non_ascii_become_hex_pairs() {
        assert_eq!(escape_rfc4514_value("a\0b"), "a\\00b");
        assert_eq!(escape_rfc4514_value("x\r\nX-Admin: 1"), "x\\0D\\0AX-Admin: 1");
        assert_eq!(escape_rfc4514_value("\u{7f}é"), "\\7F\\C3\\A9");
        assert!(HeaderValue::from_str(&escape_rfc4514_value("\t\u{1b}[31m\u{85}")).is_ok());
    }

    #[test]
    fn names_are_written_last_rdn_first_with_multi_valued_rdns_joined_by_plus() {
        let o = attribute(10, UTF8, b"Example");
        let cn = attribute(3, UTF8, b"mallory, O=Admins");
        let ou = attribute(11, 0x13, b"Ops"); // PrintableString
        assert_eq!(name(&[vec![o.clone()], vec![cn.clone()]]), "CN=mallory\\, O=Admins,O=Example");
        assert_eq!(name(&[vec![o], vec![cn, ou]]), "CN=mallory\\, O=Admins+OU=Ops,O=Example");
        assert_eq!(name(&[]), "");
    }

    #[test]
    fn unknown_types_and_non_string_values_are_written_as_hex_der() {
        // 2.5.4.99 has no short name; 2.5.4.3 with an INTEGER value has no string form.
        assert_eq!(name(&[vec![attribute(99, UTF8, b"x")]]), "2.5.4.99=#0c0178");
        assert_eq!(name(&[vec![attribute(3, 0x02, &[0x05])]]), "CN=#020105");
        // BMPString (UTF-16BE) is decoded.
        assert_eq!(name(&[vec![attribute(3, 0x1e, &[0x00, 0x61, 0x00, 0xe9])]]), "CN=a\\C3\\A9");
    }
}
