//! Opaque cursor pagination: `?limit=&cursor=` in, `{items, next_cursor}` out.
//!
//! A cursor is the keyset position of the last item of a page, serialized as JSON and encoded
//! as unpadded base64url. It is opaque to clients: anything that does not decode into the
//! position type of the endpoint (including a cursor of another endpoint) is a 400.
//! See docs/adr/0005-cursor-pagination.md.

use crate::problem::{FieldError, Problem};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Page size when the client gives none.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 100;
/// Longest cursor accepted, to bound the work of decoding.
const MAX_CURSOR_LEN: usize = 512;

/// The pagination query parameters.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(max_length = 512, pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
}

/// A validated page request: a limit and, after the first page, a position.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest<C> {
    /// How many items to return.
    pub limit: u32,
    /// Where the previous page ended.
    pub after: Option<C>,
}

impl<C> PageRequest<C> {
    /// The number of rows to fetch: one more than the limit, to know whether a next page exists.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

impl PageQuery {
    /// Checks the limit and decodes the cursor into this endpoint's position type `C`.
    pub fn parse<C: DeserializeOwned>(&self) -> Result<PageRequest<C>, Problem> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Problem::validation(vec![FieldError::new(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            )]));
        }
        let after = self.cursor.as_deref().map(decode_cursor).transpose()?;
        Ok(PageRequest { limit, after })
    }
}

/// Encodes a position as an opaque cursor.
pub fn encode_cursor<C: Serialize>(position: &C) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).unwrap_or_default())
}

/// Decodes an opaque cursor; anything malformed is a 400 `invalid_cursor`.
pub fn decode_cursor<C: DeserializeOwned>(cursor: &str) -> Result<C, Problem> {
    let invalid = || {
        Problem::bad_request(
            "invalid_cursor",
            "the cursor is not one this endpoint issued",
        )
    };
    if cursor.len() > MAX_CURSOR_LEN {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map_err(|_| invalid())
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items, in the endpoint's order.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in order: the extra row, if any, only
    /// says that a next page exists, whose cursor is the position of the last item kept.
    pub fn from_rows<R, C: Serialize>(
        mut rows: Vec<R>,
        request: &PageRequest<impl Sized>,
        position_of: impl Fn(&R) -> C,
        into_item: impl FnMut(R) -> T,
    ) -> Self {
        let limit = request.limit as usize;
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if has_more {
            rows.last().map(|r| encode_cursor(&position_of(r)))
        } else {
            None
        };
        Self {
            items: rows.into_iter().map(into_item).collect(),
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use uuid::Uuid;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Position {
        t: DateTime<Utc>,
        id: Uuid,
    }

    #[test]
    fn a_cursor_round_trips() {
        let p = Position {
            t: Utc::now(),
            id: Uuid::now_v7(),
        };
        let decoded: Position = decode_cursor(&encode_cursor(&p)).unwrap();
        assert_eq!(decoded, p);
    }

    #[test]
    fn a_tampered_cursor_is_a_400() {
        let p = Position {
            t: Utc::now(),
            id: Uuid::now_v7(),
        };
        let mut cursor = encode_cursor(&p);
        cursor.replace_range(3..5, "zz");
        for bad in [cursor.as_str(), "not base64!", "", "e30"] {
            let err = decode_cursor::<Position>(bad).unwrap_err();
            assert_eq!(
                (err.status, err.code.as_str()),
                (400, "invalid_cursor"),
                "{bad}"
            );
        }
    }

    #[test]
    fn limits_outside_1_to_100_are_refused() {
        for limit in [0, 101] {
            let err = PageQuery {
                limit: Some(limit),
                cursor: None,
            }
            .parse::<Position>()
            .unwrap_err();
            assert_eq!(err.errors[0].field, "limit");
        }
        let ok = PageQuery::default().parse::<Position>().unwrap();
        assert_eq!((ok.limit, ok.after), (20, None));
    }

    #[test]
    fn a_page_has_a_next_cursor_only_when_more_rows_exist() {
        let request = PageRequest::<u32> {
            limit: 2,
            after: None,
        };
        let page = Page::from_rows(vec![1, 2, 3], &request, |r| *r, |r| r);
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(
            decode_cursor::<u32>(page.next_cursor.as_deref().unwrap()).unwrap(),
            2
        );
        let last = Page::from_rows(vec![1, 2], &request, |r| *r, |r| r);
        assert_eq!(last.next_cursor, None);
    }
}
