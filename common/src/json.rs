//! The JSON body extractor every handler uses: `web::Json`, but the body must be a JSON object.
//!
//! serde's derived `Deserialize` for a struct also accepts a sequence of its fields in order, so
//! `web::Json<ProfilePatch>` takes `[null, null]` as a patch. Our request bodies are documented
//! as objects, and API fuzzing (ADR 0015) rightly calls that a schema violation accepted.
//! [`Json`] reads the body through the same [`web::JsonConfig`] (size limit, content type,
//! problem+json errors) and hands the deserializer a map-only visitor: anything but an object is
//! a 422 on `body`.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

/// A request body that must be a JSON object deserializing into `T`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// The deserialized body.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = web::Json::<Object<T>>::from_request(req, payload);
        Box::pin(async move { Ok(Json(body.await?.into_inner().0)) })
    }
}

/// `T`, deserialized only from a map.
struct Object<T>(T);

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: de::Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = Object<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Object)
    }
}

/// Deserializes an `i64` from any JSON number without a fractional part. JSON Schema's
/// `integer` includes `1.0`, which serde's derived impls refuse; use it on integer fields of
/// request bodies (`#[serde(deserialize_with = "common::json::integer")]`).
pub fn integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct Integer;
    impl Visitor<'_> for Integer {
        type Value = i64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
            // 2^63 is exactly representable; every whole f64 below it in magnitude fits.
            const LIMIT: f64 = 9_223_372_036_854_775_808.0;
            if v.fract() == 0.0 && (-LIMIT..LIMIT).contains(&v) {
                Ok(v as i64)
            } else {
                Err(E::invalid_value(de::Unexpected::Float(v), &self))
            }
        }
    }
    deserializer.deserialize_any(Integer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Patch {
        name: Option<String>,
        bio: Option<String>,
    }

    fn parse(body: &str) -> Result<Patch, String> {
        serde_json::from_str::<Object<Patch>>(body)
            .map(|o| o.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_object_deserializes_as_before() {
        assert_eq!(
            parse(r#"{"name": "a"}"#),
            Ok(Patch {
                name: Some("a".into()),
                bio: None
            })
        );
    }

    #[test]
    fn a_sequence_of_the_fields_is_refused() {
        // The derived impl alone takes this as Patch { name: None, bio: None }.
        assert!(serde_json::from_str::<Patch>("[null, null]").is_ok());
        let err = parse("[null, null]").unwrap_err();
        assert!(
            err.starts_with("invalid type: sequence, expected a JSON object"),
            "{err}"
        );
    }

    #[test]
    fn scalars_are_refused() {
        for body in ["null", "1", "\"x\"", "true"] {
            let err = parse(body).unwrap_err();
            assert!(err.contains("expected a JSON object"), "{body}: {err}");
        }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Marker {
        #[serde(deserialize_with = "integer")]
        seq: i64,
    }

    #[test]
    fn integers_may_be_written_as_whole_floats() {
        let seq = |body: &str| serde_json::from_str::<Marker>(body).map(|m| m.seq);
        assert_eq!(seq(r#"{"seq": 7}"#).unwrap(), 7);
        assert_eq!(seq(r#"{"seq": 7.0}"#).unwrap(), 7);
        assert_eq!(seq(r#"{"seq": -1e3}"#).unwrap(), -1000);
        for bad in [
            r#"{"seq": 7.5}"#,
            r#"{"seq": 1e19}"#,
            r#"{"seq": 9223372036854775808}"#,
            r#"{"seq": "7"}"#,
        ] {
            assert!(seq(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_errors_keep_their_messages() {
        assert!(
            parse(r#"{"nope": 1}"#)
                .unwrap_err()
                .starts_with("unknown field `nope`")
        );
        assert!(
            parse(r#"{"name": 3}"#)
                .unwrap_err()
                .starts_with("invalid type: integer")
        );
    }
}
