//! The rules of conversations and messages, parsed at the edge.

use common::problem::FieldError;
use uuid::Uuid;

/// Most people in a group, the creator included.
pub const MAX_PARTICIPANTS: usize = 50;

/// A message body: 1–4,000 characters, no NUL, not only whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody(String);

impl MessageBody {
    /// Parses a body; it is kept as written.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let len = raw.chars().count();
        if !(1..=4000).contains(&len) {
            return Err(FieldError::new("body", "must be 1 to 4000 characters"));
        }
        if raw.contains('\0') {
            return Err(FieldError::new("body", "must not contain NUL characters"));
        }
        if raw.chars().all(char::is_whitespace) {
            return Err(FieldError::new("body", "must not be only whitespace"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The body.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A group title: at most 100 characters after trimming; empty means none.
pub fn parse_title(raw: Option<&str>) -> Result<Option<String>, FieldError> {
    let Some(raw) = raw.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if raw.chars().count() > 100 {
        return Err(FieldError::new("title", "must be at most 100 characters"));
    }
    if raw.chars().any(char::is_control) {
        return Err(FieldError::new(
            "title",
            "must not contain control characters",
        ));
    }
    Ok(Some(raw.to_owned()))
}

/// A sender's id for one send (`client_id` or `Idempotency-Key`): 1–255 visible ASCII.
pub fn parse_client_id(raw: &str, field: &str) -> Result<String, FieldError> {
    let ok = !raw.is_empty() && raw.len() <= 255 && raw.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(FieldError::new(
            field,
            "must be 1 to 255 visible ASCII characters",
        ))
    }
}

/// The other participants of a new conversation: deduplicated, the creator removed, 1 to 49.
pub fn parse_others(creator: Uuid, ids: &[Uuid]) -> Result<Vec<Uuid>, FieldError> {
    let mut others: Vec<Uuid> = ids.iter().copied().filter(|id| *id != creator).collect();
    others.sort_unstable();
    others.dedup();
    if others.is_empty() {
        return Err(FieldError::new(
            "participant_ids",
            "name at least one other user",
        ));
    }
    if others.len() >= MAX_PARTICIPANTS {
        return Err(FieldError::new("participant_ids", "at most 49 other users"));
    }
    Ok(others)
}

/// The key that makes a direct conversation unique per pair.
pub fn direct_key(a: Uuid, b: Uuid) -> String {
    let (low, high) = if a < b { (a, b) } else { (b, a) };
    format!("{low}:{high}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_1_to_4000_characters_and_not_blank() {
        assert!(MessageBody::parse(&"ü".repeat(4000)).is_ok());
        for bad in ["", "  \n", "a\0", &"x".repeat(4001)] {
            assert!(MessageBody::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn others_exclude_the_creator_and_duplicates_and_are_bounded() {
        let (me, a, b) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(parse_others(me, &[a, me, a]).unwrap(), vec![a]);
        assert!(parse_others(me, &[me]).is_err());
        assert_eq!(parse_others(me, &[b, a]).unwrap().len(), 2);
        let many: Vec<Uuid> = (0..49).map(|_| Uuid::now_v7()).collect();
        assert!(parse_others(me, &many).is_ok());
        let too_many: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
        assert!(parse_others(me, &too_many).is_err());
    }

    #[test]
    fn a_direct_key_does_not_depend_on_who_asks() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(direct_key(a, b), direct_key(b, a));
    }

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(
            parse_title(Some("  team  ")).unwrap().as_deref(),
            Some("team")
        );
        assert_eq!(parse_title(Some("   ")).unwrap(), None);
        assert!(parse_title(Some(&"t".repeat(101))).is_err());
    }
}
