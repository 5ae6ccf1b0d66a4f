//! Operator trait definition.

/// Result of operator execution.
#[derive(Debug, Clone, Default)]
pub struct OperatorResult {
    /// Whether the operator matched.
    pub matched: bool,
    /// Captured groups from regex.
    pub captures: Vec<String>,
    /// The matched value.
    pub matched_value: Option<String>,
}

impl OperatorResult {
    /// Create a result indicating no match.
    pub fn no_match() -> Self {
        Self {
            matched: false,
            captures: Vec::new(),
            matched_value: None,
        }
    }

    /// Create a result indicating a match.
    pub fn matched(value: String) -> Self {
        Self {
            matched: true,
            captures: Vec::new(),
            matched_value: Some(value),
        }
    }

    /// Create a result with captures.
    pub fn matched_with_captures(value: String, captures: Vec<String>) -> Self {
        Self {
            matched: true,
            captures,
            matched_value: Some(value),
        }
    }
}

/// Trait for all operators.
pub trait Operator: Send + Sync {
    /// Execute the operator against a value.
    fn execute(&self, value: &str) -> OperatorResult;

    /// Get the operator name.
    fn name(&self) -> &'static str;

    /// Whether this operator supports capture groups.
    fn supports_capture(&self) -> bool {
        false
    }

    /// Byte strings of which every value this operator matches contains at least one, compared
    /// ASCII-case-insensitively; `None` when the operator has no such set (it must always run).
    ///
    /// A rule engine may skip the operator on a value that contains none of them (one
    /// Aho-Corasick pass over a value stands in for many operators). An operator that returns a
    /// set must never match a value without one of them.
    fn required_literals(&self) -> Option<Vec<Vec<u8>>> {
        None
    }

    /// Whether [`Operator::required_literals`] holds only for ASCII values: a value with other
    /// characters may match without containing one of the literals (an operator that lowercases
    /// with Unicode's rules, say, where `\u{212A}` becomes `k`).
    fn literals_hold_for_ascii_only(&self) -> bool {
        false
    }

    /// Whether this operator matches no value made only of bytes in `alphabet`. A rule engine
    /// may skip the operator on such values. `false` when unknown: an operator that answers
    /// `true` must never match such a value.
    fn matches_nothing_over(&self, _alphabet: &ByteSet) -> bool {
        false
    }
}

/// A set of byte values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteSet([u64; 4]);

impl ByteSet {
    /// ASCII letters and digits.
    pub const ALPHANUMERIC: ByteSet = ByteSet([0; 4])
        .with_range(b'a', b'z')
        .with_range(b'A', b'Z')
        .with_range(b'0', b'9');

    /// The set of the given bytes.
    pub const fn of(bytes: &[u8]) -> ByteSet {
        ByteSet([0; 4]).with(bytes)
    }

    /// This set with the given bytes added.
    pub const fn with(self, bytes: &[u8]) -> ByteSet {
        let mut bits = self.0;
        let mut i = 0;
        while i < bytes.len() {
            bits[(bytes[i] / 64) as usize] |= 1 << (bytes[i] % 64);
            i += 1;
        }
        ByteSet(bits)
    }

    /// The set of the bytes from `low` to `high`, both included, added to this one.
    pub const fn with_range(self, low: u8, high: u8) -> ByteSet {
        let mut bits = self.0;
        let mut b = low as u32;
        while b <= high as u32 {
            bits[(b / 64) as usize] |= 1 << (b % 64);
            b += 1;
        }
        ByteSet(bits)
    }

    /// Whether `byte` is in the set.
    #[inline]
    pub const fn contains(&self, byte: u8) -> bool {
        self.0[(byte / 64) as usize] & (1 << (byte % 64)) != 0
    }

    /// Whether every byte of `bytes` is in the set.
    pub fn contains_all(&self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.contains(b))
    }

    /// Whether every byte of `bytes` is in the set in one ASCII case or the other.
    pub fn contains_all_ignoring_ascii_case(&self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| {
            self.contains(b)
                || self.contains(b.to_ascii_lowercase())
                || self.contains(b.to_ascii_uppercase())
        })
    }

    /// Whether every byte of `self` is in `other`.
    pub fn is_subset(&self, other: &ByteSet) -> bool {
        self.0.iter().zip(other.0).all(|(a, b)| a & !b == 0)
    }
}
