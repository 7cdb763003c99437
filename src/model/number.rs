//! "A number or a string of digits": how tagents send ids and ports.

/// Why a field is not a number or a string of digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected a non-negative integer or a string of digits")]
pub struct NotDigits;

/// A string of ASCII digits, surrounded by white space or not; blank counts
/// as absent. No sign, no point, no exponent: `"+42"` and `"4e1"` are not
/// ids. The one reading of such strings, for registration and heartbeats alike.
pub fn parse_digits(s: &str) -> Result<Option<u64>, NotDigits> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NotDigits);
    }
    s.parse().map(Some).map_err(|_| NotDigits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_blank_and_everything_else() {
        assert_eq!(parse_digits("42"), Ok(Some(42)));
        assert_eq!(parse_digits(" 42 "), Ok(Some(42)));
        assert_eq!(parse_digits(""), Ok(None));
        assert_eq!(parse_digits("  "), Ok(None));
        assert_eq!(parse_digits("18446744073709551615"), Ok(Some(u64::MAX)));
        for bad in [
            "+42",
            "-1",
            "4e1",
            "1.5",
            "x1",
            "18446744073709551616",
            "4 2",
        ] {
            assert_eq!(parse_digits(bad), Err(NotDigits), "{bad}");
        }
    }
}
