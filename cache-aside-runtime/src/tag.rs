//! Tags: invalidating every entry that depends on one thing at once.
//!
//! `#[cached(tags = ["user:{id}", "team:{team}"])]` gives each entry of a function the tags
//! its arguments render: `get_user(7)` carries `user:7`, `team_members(3)` with `tags =
//! ["team:{team}"]` carries `team:3`. [`Cache::invalidate_tag`](crate::Cache::invalidate_tag)
//! then removes every entry carrying a tag, whichever function wrote it, in a few round trips
//! whatever their number; `#[cache_evict(tag = "user:{id}")]` does it after a write.
//!
//! A batch function takes `tags` too, each placeholder naming its key collection and
//! standing for each key: `#[cached(batch, tags = ["user:{ids}"])] async fn get_users(ids:
//! &[u64])` tags `get_users(&[7, 8])`'s entries `user:7` and `user:8`, as `get_user(id)` with
//! `tags = ["user:{id}"]` does. A batch and a one-key function sharing entries must tag them
//! alike, or both run uncached once both have run in one process (see
//! [`batch`](crate::batch)).
//!
//! ```no_run
//! use cache_aside_runtime::{Cache, cached, tag::Tag};
//! # #[derive(Debug)] struct DbError;
//! # async fn load_posts(user: u64, page: u32) -> Result<Vec<String>, DbError> { Ok(vec![]) }
//!
//! #[cached(ttl = 60, tags = ["user:{user}"])]
//! async fn posts(user: u64, page: u32) -> Result<Vec<String>, DbError> {
//!     load_posts(user, page).await
//! }
//!
//! # async fn demo(cache: &Cache) -> Result<(), cache_aside_runtime::Error> {
//! // Every page of user 7's posts, and whatever else carries `user:7`.
//! let removed = cache.invalidate_tag(&Tag::new("user")?.value(&7)?).await?;
//! # Ok(()) }
//! ```
//!
//! # Templates
//!
//! A tag template is a name (`[A-Za-z0-9_.-/]`), then `:`-separated segments, each fixed
//! text or one `{argument}` (`{arg.field}`) filling the whole segment: `"user:{id}"`,
//! `"team:{team}:role:{role}"`, or a bare `"catalog"`. A placeholder names what the key
//! holds: a key argument (not a `skip`ped one), or with a `key` template one of its
//! placeholders (`{self.field}` only then), so that every write of an entry carries the same
//! tags. Values are written in the key encoding (see the keys guide), so
//! `Tag::new("user")?.value(&id)?` names the same tag as the template `"user:{id}"` for the
//! same `id`, and no value reaches past its own segment.
//!
//! # How it works, and what it costs
//!
//! Each tag is a sorted set next to the entries (`{namespace}:#tag:{tag}` on Redis; a map in
//! the embedded backend), holding the keys of the entries that carry it, scored by when they
//! expire. A load of a tagged function adds its key to its tags' sets **after taking the
//! key's lease and before its body runs**; an invalidation of a tag takes the set's keys and
//! deletes them, leases and all. So a load that began before the invalidation either is in
//! the set (and its lease is revoked: it stores nothing) or adds itself after, when its body
//! starts after the invalidation and reads what the write wrote. The race leases close for
//! one key is closed for a tag too.
//!
//! - A hit costs nothing more, beyond rendering the tags from the arguments into one pooled
//!   buffer (about 370 instructions for one tag by callgrind, 1.9% of a loopback hit; for
//!   tagged functions only). A tagged batch renders every key's tags, hits included.
//! - A miss of a tagged function (or a batch's misses, all at once) costs one more round
//!   trip before its body (its tags' sets
//!   updated at once, a small script each: add the key, drop keys that expired, push the
//!   set's own expiry out to its last entry's), and scores its key again beside its store,
//!   so a slow body's entry never outlives its membership. A function without tags pays
//!   nothing. A `#[cache_put]` tags, writes, and tags again; if an invalidation took the key
//!   in between, the put's value is deleted (a put has no lease to lose).
//! - `invalidate_tag` costs two round trips per thousand entries carrying the tag (take them
//!   out of the set atomically, delete them; put them back if the deletion fails).
//! - A failure to tag is a cache failure: the value is returned and not stored (with
//!   `on_cache_error = "fail"`, it is the call's `Err`).
//! - Memory: a Redis set lives as long as its longest-lived entry and forgets expired keys
//!   as new ones come; the embedded backend sweeps its sets of keys that expired or that
//!   its byte cap evicted whenever they have doubled since the last sweep (from 1,024
//!   members), so they hold at most about twice its live tagged entries.
//!
//! [`Cache::get_many`](crate::Cache::get_many) takes its tags from its
//! [`Batch`](crate::batch::Batch): `Batch::new("user").tags(&["user:{}"])`, `{}` standing for
//! each key.

use serde::Serialize;

use crate::error::Error;
use crate::key::{self, KeyBuilder};

/// One tag, as a template renders it: `user:7`. See the [module](self).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tag {
    text: String,
}

impl Tag {
    /// A tag with the name `name`; add its segments with [`value`](Self::value) and
    /// [`text`](Self::text). `Error::Config` unless `name` is non-empty and only
    /// `[A-Za-z0-9_.-/]`.
    pub fn new(name: &str) -> Result<Tag, Error> {
        if !key::is_valid_segment(name) {
            return Err(Error::Config(format!(
                "tag name {name:?}: use only letters, digits, `_`, `.`, `-` and `/`"
            )));
        }
        Ok(Tag {
            text: name.to_owned(),
        })
    }

    /// Appends `:` and `value` in the key encoding: the `{argument}` of a template.
    pub fn value<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Tag, Error> {
        self.text.push(':');
        let mut builder = KeyBuilder::bare(std::mem::take(&mut self.text));
        builder.value(value)?;
        self.text = builder.into_text();
        Ok(self)
    }

    /// Appends `:` and fixed text: a segment of a template without a value. `Error::Config`
    /// unless `segment` is non-empty and only `[A-Za-z0-9_.-/]`.
    pub fn text(mut self, segment: &str) -> Result<Tag, Error> {
        if !key::is_valid_segment(segment) {
            return Err(Error::Config(format!(
                "tag segment {segment:?}: use only letters, digits, `_`, `.`, `-` and `/`"
            )));
        }
        self.text.push(':');
        self.text.push_str(segment);
        Ok(self)
    }

    /// The tag as rendered: `user:7`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The storage key of the set of `tag` in `namespace`: `{namespace}:#tag:{tag}`. `#` cannot
/// start a prefix, so no entry key, prefix pattern or other namespace can meet it.
pub(crate) fn set_key(namespace: &str, tag: &str) -> String {
    format!("{namespace}:#tag:{tag}")
}

/// Is `template` a [`Batch`](crate::batch::Batch)'s tag template: a name, then
/// `:`-separated segments, each fixed text (`[A-Za-z0-9_.-/]`) or `{}` (the key)?
pub(crate) const fn is_batch_template(template: &str) -> bool {
    let bytes = template.as_bytes();
    let (mut i, mut start, mut first) = (0, 0, true);
    while i <= bytes.len() {
        if i == bytes.len() || bytes[i] == b':' {
            let len = i - start;
            let key = len == 2 && bytes[start] == b'{' && bytes[start + 1] == b'}';
            if len == 0 || (first && key) {
                return false;
            }
            if !key {
                let mut j = start;
                while j < i {
                    let b = bytes[j];
                    if !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/')) {
                        return false;
                    }
                    j += 1;
                }
            }
            first = false;
            start = i + 1;
        }
        i += 1;
    }
    true
}

/// Renders a [`Batch`](crate::batch::Batch)'s tag templates for one key.
pub(crate) fn render_templates<K: Serialize + ?Sized>(
    writer: &mut TagWriter<'_>,
    templates: &[&str],
    key: &K,
) -> Result<(), Error> {
    for template in templates {
        let mut segments = template.split(':');
        writer.begin(segments.next().unwrap_or_default());
        for segment in segments {
            match segment {
                "{}" => writer.value(key)?,
                fixed => writer.text(fixed),
            }
        }
    }
    Ok(())
}

/// Renders the tags of one key of a batch function: `tags = [..]` with each placeholder
/// naming the key collection standing for that key.
#[doc(hidden)]
pub type BatchTags<K> = fn(&mut TagWriter<'_>, &K) -> Result<(), Error>;

/// Renders the tags of one call: what generated code for `tags = [..]` calls. The set keys
/// go into one pooled buffer, one per line (no key holds a `\n`): a tagged hit pays no
/// allocation for its tags.
#[doc(hidden)]
pub struct TagWriter<'n> {
    namespace: &'n str,
    buf: Option<String>,
}

impl<'n> TagWriter<'n> {
    pub(crate) fn new(namespace: &'n str) -> TagWriter<'n> {
        TagWriter {
            namespace,
            buf: None,
        }
    }

    /// Starts the next tag, named `name` (checked by the macro).
    pub fn begin(&mut self, name: &str) {
        let namespace = self.namespace;
        let buf = self
            .buf
            .get_or_insert_with(|| key::pooled(namespace.len() + name.len() + 32));
        if !buf.is_empty() {
            buf.push('\n');
        }
        buf.push_str(namespace);
        buf.push_str(":#tag:");
        buf.push_str(name);
    }

    /// Appends `:` and fixed text (checked by the macro).
    pub fn text(&mut self, segment: &str) {
        if let Some(buf) = &mut self.buf {
            buf.push(':');
            buf.push_str(segment);
        }
    }

    /// Appends `:` and one value in the key encoding.
    pub fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let Some(buf) = self.buf.as_mut() else {
            return Ok(());
        };
        buf.push(':');
        let mut builder = KeyBuilder::bare(std::mem::take(buf));
        let written = builder.value(value);
        *buf = builder.into_text();
        written
    }

    /// The storage keys of the tags' sets, one per line; `None` without tags.
    pub(crate) fn finish(self) -> Option<String> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_templates_are_a_name_then_fixed_or_key_segments() {
        for good in ["user:{}", "catalog", "team:{}:role:x", "a.b/c-d_e:{}:{}"] {
            assert!(is_batch_template(good), "{good}");
        }
        for bad in [
            "",
            "{}",
            ":x",
            "user:",
            "user::{}",
            "user:{id}",
            "user:{}x",
            "a b",
            "user:{",
            "user:}{",
            "user:#",
        ] {
            assert!(!is_batch_template(bad), "{bad}");
        }
    }

    #[test]
    fn batch_templates_render_as_the_macro_renders() {
        let mut writer = TagWriter::new("ns");
        render_templates(&mut writer, &["user:{}", "team:x:{}"], &"a:b").unwrap();
        let expected = format!(
            "{}\n{}",
            set_key(
                "ns",
                Tag::new("user").unwrap().value("a:b").unwrap().as_str()
            ),
            set_key(
                "ns",
                Tag::new("team")
                    .unwrap()
                    .text("x")
                    .unwrap()
                    .value("a:b")
                    .unwrap()
                    .as_str()
            ),
        );
        assert_eq!(writer.finish().as_deref(), Some(expected.as_str()));
    }
}
