//! Account fields: usernames, emails, passwords, display names, bios.

use common::config::Secret;
use common::problem::FieldError;

fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control() && c != '\n')
}

/// 3–30 characters of `[a-z0-9_]`, stored lower-case (so unique case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Parses a username; upper-case letters are folded to lower case.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let s = raw.to_ascii_lowercase();
        let len = s.chars().count();
        if !(3..=30).contains(&len) {
            return Err(FieldError::new("username", "must be 3 to 30 characters"));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(FieldError::new(
                "username",
                "may contain only letters a-z, digits and underscores",
            ));
        }
        Ok(Self(s))
    }

    /// The normalised username.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address, trimmed and lower-cased so that one address cannot register twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Parses an address: at most 254 characters as sent; surrounding whitespace is dropped;
    /// a local part of 1–64 characters, one `@`, and two or more non-empty dot-separated domain
    /// labels, none with whitespace or control characters. `RegisterBody`'s OpenAPI pattern
    /// states the same rule.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let invalid = || FieldError::new("email", "must be a valid email address");
        let part_ok = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c != '@' && !c.is_whitespace() && !c.is_control())
        };
        if raw.chars().count() > 254 {
            return Err(invalid());
        }
        let s = raw.trim();
        let (local, domain) = s.split_once('@').ok_or_else(invalid)?;
        let mut labels = domain.split('.');
        let labels_ok = labels.clone().count() >= 2 && labels.all(part_ok);
        if !part_ok(local) || local.chars().count() > 64 || !labels_ok {
            return Err(invalid());
        }
        Ok(Self(s.to_lowercase()))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a user types to sign in: a username or an email, normalised like either.
#[derive(Debug, Clone)]
pub struct Login(String);

impl Login {
    /// Parses a login: 1–254 characters as sent, not only whitespace.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let s = raw.trim();
        if s.is_empty() || raw.chars().count() > 254 {
            return Err(FieldError::new("login", "must be a username or an email"));
        }
        Ok(Self(s.to_lowercase()))
    }

    /// The normalised login.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password of 8–128 characters. Never printed.
#[derive(Debug, Clone)]
pub struct Password(Secret);

impl Password {
    /// Parses a new password.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let len = raw.chars().count();
        if !(8..=128).contains(&len) {
            return Err(FieldError::new("password", "must be 8 to 128 characters"));
        }
        Ok(Self(Secret::new(raw)))
    }

    /// A password offered at sign-in: any length up to the maximum is checked against the hash.
    pub fn offered(raw: &str) -> Result<Self, FieldError> {
        if raw.is_empty() || raw.chars().count() > 128 {
            return Err(FieldError::new("password", "must be 1 to 128 characters"));
        }
        Ok(Self(Secret::new(raw)))
    }

    /// The password itself, for hashing.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

/// A display name: 1–50 characters as sent, not only whitespace, no control characters but
/// line breaks; stored trimmed. The rules apply to the name as sent, so that the OpenAPI
/// document can state them exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    /// Parses a display name.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let s = raw.trim();
        let len = raw.chars().count();
        if !(1..=50).contains(&len) || s.is_empty() {
            return Err(FieldError::new(
                "display_name",
                "must be 1 to 50 characters, not only whitespace",
            ));
        }
        if has_control(raw) {
            return Err(FieldError::new(
                "display_name",
                "must not contain control characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The display name a new account gets: its username.
    pub fn from_username(username: &Username) -> Self {
        Self(username.as_str().to_owned())
    }

    /// The display name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A bio: at most 300 characters, line breaks allowed, no other control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bio(String);

impl Bio {
    /// Parses a bio: at most 300 characters as sent; stored trimmed.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let s = raw.trim();
        if raw.chars().count() > 300 {
            return Err(FieldError::new("bio", "must be at most 300 characters"));
        }
        if has_control(raw) {
            return Err(FieldError::new(
                "bio",
                "must not contain control characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The empty bio.
    pub fn empty() -> Self {
        Self(String::new())
    }

    /// The bio.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_folded_to_lower_case_and_limited_to_a_safe_alphabet() {
        assert_eq!(Username::parse("Alice_01").unwrap().as_str(), "alice_01");
        for (bad, why) in [
            ("ab", "too short"),
            (&"a".repeat(31), "too long"),
            ("al ice", "space"),
            ("alicé", "non-ascii"),
            ("al-ice", "dash"),
        ] {
            assert!(Username::parse(bad).is_err(), "{why}");
        }
    }

    #[test]
    fn emails_are_normalised_and_checked_for_shape() {
        assert_eq!(
            Email::parse("  Bob@Example.COM ").unwrap().as_str(),
            "bob@example.com"
        );
        for bad in [
            "bob",
            "bob@",
            "@example.com",
            "bob@example",
            "b ob@example.com",
            "bob@@example.com",
            "bob@.com",
            "bob@example.",
            "bob@example..com",
            "bob\u{7}@example.com",
            "bob@exa\u{a0}mple.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_must_be_8_to_128_characters() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse(&"x".repeat(129)).is_err());
        assert!(Password::parse("correct horse").is_ok());
        assert!(!format!("{:?}", Password::parse("correct horse").unwrap()).contains("horse"));
    }

    #[test]
    fn display_names_and_bios_have_length_limits() {
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse(&"é".repeat(50)).is_ok());
        assert!(DisplayName::parse(&"é".repeat(51)).is_err());
        assert!(Bio::parse(&"b".repeat(300)).is_ok());
        assert!(Bio::parse(&"b".repeat(301)).is_err());
        assert!(Bio::parse("line\u{0}").is_err());
        // Lengths and characters count as sent, though the value is stored trimmed.
        assert!(DisplayName::parse(&format!(" {}", "é".repeat(50))).is_err());
        assert!(DisplayName::parse("\tAlice").is_err());
        assert_eq!(DisplayName::parse(" Alice ").unwrap().as_str(), "Alice");
        assert!(Bio::parse(&format!("{} ", "b".repeat(300))).is_err());
        assert!(Bio::parse("two\nlines").is_ok());
    }
}
