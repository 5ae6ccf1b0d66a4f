//! What one consumer did on one route in one day: requests by status class, bytes in and out.

use serde::Serialize;

/// The fields of a record as the store names them: the classes, then `in` and `out`.
pub(crate) const FIELDS: [&str; 6] = ["2xx", "3xx", "4xx", "5xx", "in", "out"];

/// One record's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub(crate) struct Counts {
    /// Requests answered 2xx (and 1xx: a protocol switch is a success), 3xx, 4xx, 5xx.
    pub(crate) status: [u64; 4],
    /// Request body bytes read from the client.
    pub(crate) bytes_in: u64,
    /// Response body bytes sent to the client.
    pub(crate) bytes_out: u64,
}

/// Index of a status code's class (`2xx`, `3xx`, `4xx`, `5xx`): 1xx counts as 2xx, anything past 5xx as 5xx.
pub(crate) fn class_of(status: u16) -> usize {
    usize::from(status / 100).clamp(2, 5) - 2
}

impl Counts {
    /// One request.
    pub(crate) fn one(status: u16, bytes_in: u64, bytes_out: u64) -> Counts {
        let mut c = Counts { bytes_in, bytes_out, ..Counts::default() };
        c.status[class_of(status)] = 1;
        c
    }

    /// Requests of every class.
    pub(crate) fn requests(&self) -> u64 {
        self.status.iter().sum()
    }

    /// Add `other` (saturating: a counter never wraps to a small number).
    pub(crate) fn add(&mut self, other: &Counts) {
        for (mine, theirs) in self.status.iter_mut().zip(other.status) {
            *mine = mine.saturating_add(theirs);
        }
        self.bytes_in = self.bytes_in.saturating_add(other.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(other.bytes_out);
    }

    /// The numbers in [`FIELDS`] order.
    pub(crate) fn values(&self) -> [u64; 6] {
        let [a, b, c, d] = self.status;
        [a, b, c, d, self.bytes_in, self.bytes_out]
    }

    /// Set the number of field `name` (one of [`FIELDS`]); `false` for another name.
    pub(crate) fn set(&mut self, name: &str, value: u64) -> bool {
        match FIELDS.iter().position(|f| *f == name) {
            Some(i @ 0..=3) => self.status[i] = value,
            Some(4) => self.bytes_in = value,
            Some(_) => self.bytes_out = value,
            None => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_sums() {
        assert_eq!([101, 200, 204, 301, 304, 404, 429, 500, 503, 999].map(class_of), [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]);
        let mut total = Counts::one(200, 10, 100);
        total.add(&Counts::one(503, 1, 2));
        total.add(&Counts::one(404, 0, 0));
        assert_eq!(total, Counts { status: [1, 0, 1, 1], bytes_in: 11, bytes_out: 102 });
        assert_eq!(total.requests(), 3);
        assert_eq!(total.values(), [1, 0, 1, 1, 11, 102]);
        let mut read = Counts::default();
        for (name, value) in FIELDS.iter().zip(total.values()) {
            assert!(read.set(name, value));
        }
        assert_eq!(read, total);
        assert!(!read.set("seq", 1));
        let mut huge = Counts { bytes_out: u64::MAX, ..Counts::default() };
        huge.add(&Counts::one(200, 0, 5));
        assert_eq!(huge.bytes_out, u64::MAX, "saturates");
    }
}
