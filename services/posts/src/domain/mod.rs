//! The rules of posts, parsed at the edge.

use common::problem::FieldError;

/// Post text: 1–500 Unicode scalar values, no NUL, not only whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostText(String);

impl PostText {
    /// Parses post text. It is kept as written (not trimmed).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let len = raw.chars().count();
        if !(1..=500).contains(&len) {
            return Err(FieldError::new("text", "must be 1 to 500 characters"));
        }
        if raw.contains('\0') {
            return Err(FieldError::new("text", "must not contain NUL characters"));
        }
        if raw.chars().all(char::is_whitespace) {
            return Err(FieldError::new("text", "must not be only whitespace"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An `Idempotency-Key` header: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses the header value.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok = !raw.is_empty() && raw.len() <= 255 && raw.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(FieldError::new(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            ))
        }
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_text_counts_unicode_scalar_values() {
        assert!(PostText::parse(&"é".repeat(500)).is_ok());
        assert!(PostText::parse(&"é".repeat(501)).is_err());
        assert!(PostText::parse(&"👍".repeat(500)).is_ok());
    }

    #[test]
    fn post_text_refuses_empty_blank_and_nul() {
        for bad in ["", "   ", "\n\t ", "a\0b"] {
            assert!(PostText::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(PostText::parse("  hi  ").unwrap().as_str(), "  hi  ");
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        assert!(IdempotencyKey::parse("abc-123_X").is_ok());
        for bad in ["", "has space", "ü", &"k".repeat(256)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
