//! The rules of conversations and messages, parsed at the edge.

use common::problem::{FieldError, Problem};
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

/// A group title: at most 100 characters as sent, no control characters; stored trimmed, and
/// blank means none. The rules apply to the title as sent, so that the OpenAPI document can
/// state them exactly.
pub fn parse_title(raw: Option<&str>) -> Result<Option<String>, FieldError> {
    let Some(raw) = raw else {
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
    let title = raw.trim();
    Ok((!title.is_empty()).then(|| title.to_owned()))
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

/// The people `creator` names in `field`: 1 to 49 ids as sent (a 422 `validation_failed`
/// otherwise), returned deduplicated and without the creator. Naming only yourself is a 422
/// `self_action`: whether an id is yours depends on who asks, which no schema can say.
pub fn parse_others(creator: Uuid, ids: &[Uuid], field: &str) -> Result<Vec<Uuid>, Problem> {
    if ids.is_empty() || ids.len() >= MAX_PARTICIPANTS {
        return Err(Problem::validation(vec![FieldError::new(
            field,
            "must name 1 to 49 users",
        )]));
    }
    let mut others: Vec<Uuid> = ids.iter().copied().filter(|id| *id != creator).collect();
    others.sort_unstable();
    others.dedup();
    if others.is_empty() {
        return Err(
            Problem::self_action("name at least one user other than yourself")
                .with_errors(vec![FieldError::new(field, "names only yourself")]),
        );
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
        let code = |ids: &[Uuid]| parse_others(me, ids, "ids").map_err(|p| p.code);
        assert_eq!(code(&[a, me, a]), Ok(vec![a]));
        assert_eq!(code(&[me]), Err("self_action".to_owned()));
        assert_eq!(code(&[me, me]), Err("self_action".to_owned()));
        assert_eq!(code(&[]), Err("validation_failed".to_owned()));
        assert_eq!(code(&[b, a]).unwrap().len(), 2);
        let many: Vec<Uuid> = (0..49).map(|_| Uuid::now_v7()).collect();
        assert!(code(&many).is_ok());
        // The bound applies to the ids as sent, as the OpenAPI document says.
        let mut too_many = many.clone();
        too_many.push(me);
        assert_eq!(code(&too_many), Err("validation_failed".to_owned()));
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
        // Bounds and characters apply to the title as sent.
        assert!(parse_title(Some(&format!("{} ", "t".repeat(100)))).is_err());
        assert!(parse_title(Some("\tteam")).is_err());
    }
}
