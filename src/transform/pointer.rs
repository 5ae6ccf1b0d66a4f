//! JSON pointers (RFC 6901: `/a/b`, `~1` for `/`, `~0` for `~`) with one addition: a token that
//! is exactly `*` stands for every element of an array and every member of an object. A member
//! literally named `*` therefore cannot be addressed (documented in docs/transform.md).

/// One reference token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    /// A member name; on an array, the element at `index` when the name is one (`0`, `12`;
    /// never `01`). `-` on an array, where a value is written, means "after the last element".
    Name {
        /// The name, unescaped.
        name: String,
        /// The array index the name spells, if any.
        index: Option<usize>,
    },
    /// `*`: every element, every member.
    Any,
}

impl Token {
    fn parse(escaped: &str) -> Result<Token, String> {
        if escaped == "*" {
            return Ok(Token::Any);
        }
        let mut name = String::with_capacity(escaped.len());
        let mut chars = escaped.chars();
        while let Some(c) = chars.next() {
            if c != '~' {
                name.push(c);
                continue;
            }
            match chars.next() {
                Some('0') => name.push('~'),
                Some('1') => name.push('/'),
                _ => return Err("`~` must be followed by `0` (for `~`) or `1` (for `/`)".into()),
            }
        }
        let canonical = name == "0" || (!name.starts_with('0') && !name.is_empty());
        let index = (canonical && name.bytes().all(|b| b.is_ascii_digit())).then(|| name.parse().ok()).flatten();
        Ok(Token::Name { name, index })
    }

    /// Whether this token selects the member `key` of an object.
    pub(crate) fn selects_member(&self, key: &str) -> bool {
        match self {
            Token::Any => true,
            Token::Name { name, .. } => name == key,
        }
    }

    /// Whether this token selects element `i` of an array.
    pub(crate) fn selects_element(&self, i: usize) -> bool {
        match self {
            Token::Any => true,
            Token::Name { index, .. } => *index == Some(i),
        }
    }

    /// The name this token writes (`None` for `*`).
    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            Token::Any => None,
            Token::Name { name, .. } => Some(name),
        }
    }
}

/// A parsed pointer, with the text it was written as (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pointer {
    /// As written in the file.
    pub(crate) text: String,
    /// Its tokens; empty for `""`, the whole body.
    pub(crate) tokens: Vec<Token>,
}

/// The deepest pointer accepted (a document nested deeper is refused by the JSON parser anyway).
const MAX_TOKENS: usize = 64;

impl Pointer {
    /// Parse `text`: empty (the whole body) or `/`-separated tokens.
    pub(crate) fn parse(text: &str) -> Result<Pointer, String> {
        if text.is_empty() {
            return Ok(Pointer { text: String::new(), tokens: Vec::new() });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("`{text}` is not a JSON pointer: it must start with `/` (e.g. `/customer/id`)"));
        };
        let tokens = rest.split('/').map(Token::parse).collect::<Result<Vec<_>, _>>();
        let tokens = tokens.map_err(|e| format!("`{text}`: {e}"))?;
        if tokens.len() > MAX_TOKENS {
            return Err(format!("`{text}` has more than {MAX_TOKENS} tokens"));
        }
        Ok(Pointer { text: text.to_string(), tokens })
    }

    /// Whether a token is `*`.
    pub(crate) fn has_wildcard(&self) -> bool {
        self.tokens.contains(&Token::Any)
    }

    /// The tokens up to and including the last `*`, and those after it.
    pub(crate) fn split_at_last_wildcard(&self) -> (&[Token], &[Token]) {
        let at = self.tokens.iter().rposition(|t| *t == Token::Any).map_or(0, |i| i + 1);
        self.tokens.split_at(at)
    }
}

/// Whether two pointers can reach one place, or one a place inside the other's: one is a
/// prefix of the other, `*` matching any token.
pub(crate) fn overlap(a: &[Token], b: &[Token]) -> bool {
    a.iter().zip(b).all(|(x, y)| match (x, y) {
        (Token::Any, _) | (_, Token::Any) => true,
        (Token::Name { name: n, .. }, Token::Name { name: m, .. }) => n == m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Token {
        Token::parse(n).expect("token")
    }

    #[test]
    fn pointers_unescape_and_mark_indexes_and_wildcards() {
        let p = Pointer::parse("/a~1b/m~0n/0/*/01/-").expect("valid");
        assert_eq!(
            p.tokens,
            vec![
                Token::Name { name: "a/b".into(), index: None },
                Token::Name { name: "m~n".into(), index: None },
                Token::Name { name: "0".into(), index: Some(0) },
                Token::Any,
                Token::Name { name: "01".into(), index: None },
                Token::Name { name: "-".into(), index: None },
            ]
        );
        assert!(p.has_wildcard());
        let (prefix, rest) = p.split_at_last_wildcard();
        assert_eq!((prefix.len(), rest.len()), (4, 2));
        assert_eq!(Pointer::parse("").expect("root").tokens, vec![]);
        assert_eq!(Pointer::parse("/").expect("empty name").tokens, vec![name("")]);
        assert_eq!(
            Pointer::parse("/~01").expect("~0 then 1").tokens,
            vec![Token::Name { name: "~1".into(), index: None }]
        );
        for bad in ["a", "a/b", "/~", "/~2", "/a~"] {
            assert!(Pointer::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Pointer::parse(&"/a".repeat(65)).is_err());
    }

    #[test]
    fn tokens_select_members_and_elements() {
        assert!(name("0").selects_element(0) && name("0").selects_member("0"));
        assert!(!name("01").selects_element(1) && !name("a").selects_element(0));
        assert!(Token::Any.selects_element(7) && Token::Any.selects_member("x"));
        assert!(!name("a").selects_member("b"));
    }

    #[test]
    fn overlap_is_prefix_with_wildcards() {
        let p = |t: &str| Pointer::parse(t).expect("valid").tokens;
        assert!(overlap(&p("/a"), &p("/a/b")));
        assert!(overlap(&p("/a/*/c"), &p("/a/b")));
        assert!(!overlap(&p("/a/x"), &p("/a/y")));
        assert!(!overlap(&p("/created_at"), &p("/createdAt")));
    }
}
