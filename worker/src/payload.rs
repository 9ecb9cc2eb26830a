//! What a handler receives and returns, and how the runtime converts them.

use std::future::Future;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::failure::HandlerError;
use crate::message::{ItemBody, ObjectRef};
use crate::store::ObjectStore;

/// A type the runtime can build from an incoming item.
pub trait Payload: Sized + Send + 'static {
    /// Decodes `body`, fetching from `input` when the item names an object.
    /// Decoding failures are permanent: the same bytes never decode later.
    fn decode(
        body: ItemBody,
        input: &dyn ObjectStore,
    ) -> impl Future<Output = Result<Self, HandlerError>> + Send;
}

/// A stored object, fetched by the runtime, with its reference.
#[derive(Debug, Clone)]
pub struct Object {
    /// Where it came from.
    pub reference: ObjectRef,
    /// Its whole content.
    pub bytes: Bytes,
}

impl Payload for Object {
    async fn decode(body: ItemBody, input: &dyn ObjectStore) -> Result<Self, HandlerError> {
        match body {
            ItemBody::Object(reference) => {
                let bytes = input.get(&reference).await?;
                Ok(Object { reference, bytes })
            }
            ItemBody::Inline(_) => Err(HandlerError::permanent(
                "expected an object reference {key, ...}, got inline JSON",
            )),
            ItemBody::Raw(_) => Err(HandlerError::permanent(
                "expected an object reference {key, ...}, got a raw message body",
            )),
        }
    }
}

impl Payload for Bytes {
    async fn decode(body: ItemBody, input: &dyn ObjectStore) -> Result<Self, HandlerError> {
        match body {
            ItemBody::Object(reference) => Ok(input.get(&reference).await?),
            ItemBody::Inline(value) => Ok(Bytes::from(value.to_string())),
            ItemBody::Raw(bytes) => Ok(bytes),
        }
    }
}

/// Any serde type, as a payload (decoded from JSON) or an output (stored as
/// `<item>.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + Send + 'static> Payload for Json<T> {
    async fn decode(body: ItemBody, input: &dyn ObjectStore) -> Result<Self, HandlerError> {
        let invalid = |e: serde_json::Error| {
            HandlerError::permanent(format!(
                "payload does not match {}: {e}",
                std::any::type_name::<T>()
            ))
        };
        match body {
            ItemBody::Inline(value) => serde_json::from_value(value).map(Json).map_err(invalid),
            ItemBody::Raw(bytes) => serde_json::from_slice(&bytes).map(Json).map_err(invalid),
            ItemBody::Object(reference) => {
                let bytes = input.get(&reference).await?;
                serde_json::from_slice(&bytes).map(Json).map_err(invalid)
            }
        }
    }
}

/// A file-like output the runtime stores next to the item's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The content.
    pub bytes: Bytes,
    /// File extension without the dot (`jpg`); replaces the item's own.
    pub extension: String,
    /// MIME type (`image/jpeg`).
    pub content_type: String,
}

/// A type the runtime can store as an item's result.
pub trait Output: Send + 'static {
    /// `None` when there is nothing to store.
    fn into_blob(self) -> Result<Option<Blob>, HandlerError>;
}

impl Output for () {
    fn into_blob(self) -> Result<Option<Blob>, HandlerError> {
        Ok(None)
    }
}

impl Output for Blob {
    fn into_blob(self) -> Result<Option<Blob>, HandlerError> {
        Ok(Some(self))
    }
}

impl<T: Serialize + Send + 'static> Output for Json<T> {
    fn into_blob(self) -> Result<Option<Blob>, HandlerError> {
        let bytes = serde_json::to_vec(&self.0)
            .map_err(|e| HandlerError::permanent(format!("output is not serialisable: {e}")))?;
        Ok(Some(Blob {
            bytes: Bytes::from(bytes),
            extension: "json".into(),
            content_type: "application/json".into(),
        }))
    }
}

/// The key an item's output is stored under: the item id with its extension
/// replaced by the output's (`photos/cat.png` + `jpg` -> `photos/cat.jpg`).
///
/// Deterministic, so a retried or redelivered item overwrites its output.
/// Two inputs that differ only by extension map to the same output key.
pub fn output_key(item_id: &str, extension: &str) -> String {
    let (dir, name) = match item_id.rsplit_once('/') {
        Some((dir, name)) => (Some(dir), name),
        None => (None, item_id),
    };
    let stem = match name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => name,
    };
    let file = if extension.is_empty() {
        stem.to_owned()
    } else {
        format!("{stem}.{extension}")
    };
    match dir {
        Some(dir) => format!("{dir}/{file}"),
        None => file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keys_replace_the_extension_only() {
        assert_eq!(output_key("photos/cat.png", "jpg"), "photos/cat.jpg");
        assert_eq!(output_key("cat", "jpg"), "cat.jpg");
        assert_eq!(output_key(".hidden", "jpg"), ".hidden.jpg");
        assert_eq!(output_key("a.b/c.d.tiff", "jpg"), "a.b/c.d.jpg");
        assert_eq!(output_key("c-1f/3", "json"), "c-1f/3.json");
    }

    #[test]
    fn json_output_is_stored_as_json() {
        let blob = Json(serde_json::json!({"w": 1}))
            .into_blob()
            .unwrap()
            .unwrap();
        assert_eq!(blob.extension, "json");
        assert_eq!(&blob.bytes[..], br#"{"w":1}"#);
    }
}
