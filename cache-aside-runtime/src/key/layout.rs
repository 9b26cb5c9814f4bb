//! A function's key layout: which keys under its prefix are its own.

/// The shape of one function's arguments part, as the macro saw it: its `:`-separated
/// segments, each fixed text or one value with fixed text around it (`{}` marks the
/// value). A plain function with two key arguments has layout `{}:{}`; `key =
/// "user:{id}:posts:{page}"` has `{}:posts:{}`; no key arguments, the empty layout.
///
/// Several functions may share a prefix (`prefix = "user"` beside `key = "user:{id}:posts"`),
/// so a prefix pattern alone would delete the neighbours' entries too: `_invalidate_all`
/// deletes only the keys whose arguments part fits the function's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout(&'static str);

impl Layout {
    /// A layout as the macro writes it.
    pub const fn new(text: &'static str) -> Layout {
        Layout(text)
    }

    /// The layout as written: `{}` for each value.
    pub(crate) fn text(&self) -> &'static str {
        self.0
    }

    /// 16 hex digits naming this layout in hashed keys.
    pub(crate) fn tag(&self) -> String {
        let digest = sha1_smol::Sha1::from(self.0.as_bytes())
            .digest()
            .to_string();
        digest[..16].to_owned()
    }

    /// Does `args`, the part of a key after `{namespace}:{prefix}:`, fit this layout?
    pub(crate) fn fits(&self, args: &str) -> bool {
        if let Some(hashed) = args.strip_prefix('#') {
            return hashed.len() == 16 + 40
                && hashed.starts_with(&self.tag())
                && hashed.bytes().all(|b| b.is_ascii_hexdigit());
        }
        if self.0.is_empty() {
            return args.is_empty();
        }
        let mut segments = args.split(':');
        for shape in self.0.split(':') {
            let Some(segment) = segments.next() else {
                return false;
            };
            let fits = match shape.split_once("{}") {
                None => segment == shape,
                Some(slot) => fits_slot(segment, slot),
            };
            if !fits {
                return false;
            }
        }
        segments.next().is_none()
    }

    /// Can a key's arguments part fit both layouts? Conservative: a value may be any
    /// non-empty text, so a value slot meets any fixed text with its affixes.
    pub(crate) fn meets(&self, other: &Layout) -> bool {
        let (mine, theirs) = (self.text(), other.text());
        if mine.split(':').count() != theirs.split(':').count() {
            return false;
        }
        mine.split(':').zip(theirs.split(':')).all(|(a, b)| {
            match (a.split_once("{}"), b.split_once("{}")) {
                (None, None) => a == b,
                (Some(slot), None) => fits_slot(b, slot),
                (None, Some(slot)) => fits_slot(a, slot),
                (Some((pre_a, post_a)), Some((pre_b, post_b))) => {
                    (pre_a.starts_with(pre_b) || pre_b.starts_with(pre_a))
                        && (post_a.ends_with(post_b) || post_b.ends_with(post_a))
                }
            }
        })
    }
}

/// Can `text` be one value with `before` and `after` around it? A value is never empty.
fn fits_slot(text: &str, (before, after): (&str, &str)) -> bool {
    text.len() > before.len() + after.len() && text.starts_with(before) && text.ends_with(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_meet_when_one_text_fits_both() {
        let meet = |a: &'static str, b: &'static str| Layout::new(a).meets(&Layout::new(b));
        for (a, b) in [
            ("{}", "{}"),
            ("{}", "v{}.json"),
            ("{}:{}", "{}:posts"),
            ("{}.json", "v{}.json"),
            ("", ""),
            ("a:{}", "a:{}"),
        ] {
            assert!(meet(a, b) && meet(b, a), "{a:?} {b:?}");
        }
        for (a, b) in [
            ("{}", "{}:posts:{}"),
            ("", "{}"),
            ("a{}", "b{}"),
            ("{}:posts", "{}:drafts"),
            ("{}.json", "{}.xml"),
            ("posts", "p"),
        ] {
            assert!(!meet(a, b) && !meet(b, a), "{a:?} {b:?}");
        }
    }
}
