//! `key = "user:{id}:posts:{page}"` templates, checked at compile time.
//!
//! A template is a prefix (the text before the first `:`), then fixed text and `{name}` or
//! `{name.field.field}` placeholders. Fixed text may use letters, digits, `_ . - / :`; the
//! placeholders are written with the runtime's key encoding, so their values are escaped.
//!
//! Between two `:` there is at most one placeholder. Values escape `:` but not the other
//! characters fixed text may use, so `{a}{b}` or `{a}-{b}` could not tell `(1, 23)` from
//! `(12, 3)`, nor `("x-y", "z")` from `("x", "y-z")`; with one value per segment, the fixed
//! text around it is the same for every call and cuts nothing.

use syn::LitStr;

/// Same rule as the runtime's `key::is_valid_segment`: prefixes never contain `:`.
pub fn is_valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'))
}

pub enum Part {
    /// Fixed text, written verbatim.
    Text(String),
    /// `{root.field.field}`: an argument (or `self`) and a field path.
    Arg { root: String, fields: Vec<String> },
}

pub struct Template {
    pub lit: LitStr,
    pub prefix: String,
    pub parts: Vec<Part>,
}

impl Template {
    pub fn parse(lit: &LitStr) -> syn::Result<Template> {
        let text = lit.value();
        let err = |msg: String| syn::Error::new(lit.span(), msg);
        let (prefix, rest) = text
            .split_once(':')
            .filter(|(prefix, _)| is_valid_segment(prefix))
            .ok_or_else(|| {
                err(format!(
                    "`key` must start with a prefix and a colon, like \"user:{{id}}\"; the prefix \
                     uses only letters, digits, `_`, `.`, `-` and `/` (got {text:?})"
                ))
            })?;
        let mut parts = Vec::new();
        let mut chars = rest.char_indices().peekable();
        let mut text_start = 0;
        // The placeholder already in the current `:`-separated segment, if any.
        let mut in_segment: Option<&str> = None;
        while let Some((i, c)) = chars.next() {
            match c {
                ':' => in_segment = None,
                '{' => {
                    if i > text_start {
                        parts.push(Part::Text(rest[text_start..i].to_owned()));
                    }
                    let close = rest[i..]
                        .find('}')
                        .map(|n| i + n)
                        .ok_or_else(|| err(format!("unclosed `{{` in key template {text:?}")))?;
                    let inner = &rest[i + 1..close];
                    parts.push(parse_placeholder(inner).ok_or_else(|| {
                        err(format!(
                            "`{{{inner}}}` in the key template is not an argument name or a field path like `{{user.id}}`"
                        ))
                    })?);
                    if let Some(before) = in_segment.replace(inner.trim()) {
                        return Err(err(format!(
                            "`{{{before}}}` and `{{{}}}` are not separated by `:` in the key template, so \
                             their values could run into each other (`{{a}}{{b}}` is `123` for both \
                             (1, 23) and (12, 3)); put a `:` between them, like \"t:{{a}}:{{b}}\"",
                            inner.trim()
                        )));
                    }
                    while chars.peek().is_some_and(|&(j, _)| j <= close) {
                        chars.next();
                    }
                    text_start = close + 1;
                }
                c if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':') => {}
                other => {
                    return Err(err(format!(
                        "`{other}` is not allowed in a key template; fixed text uses letters, digits, \
                         `_`, `.`, `-`, `/` and `:`, and values go in `{{argument}}`"
                    )));
                }
            }
        }
        if text_start < rest.len() {
            parts.push(Part::Text(rest[text_start..].to_owned()));
        }
        Ok(Template {
            lit: lit.clone(),
            prefix: prefix.to_owned(),
            parts,
        })
    }

    /// A tag template: a bare name (`"catalog"`), or a key template whose placeholders
    /// each fill a whole `:`-separated segment (`"team:{t}:user:{u}"`), so that
    /// `Tag::new(..).value(..).text(..)` can name every tag one renders.
    pub fn parse_tag(lit: &LitStr) -> syn::Result<Template> {
        let text = lit.value();
        if is_valid_segment(&text) {
            return Ok(Template {
                lit: lit.clone(),
                prefix: text,
                parts: Vec::new(),
            });
        }
        if !text.contains(':') {
            return Err(syn::Error::new(
                lit.span(),
                format!(
                    "a tag is a name of letters, digits, `_`, `.`, `-` and `/`, then `:`-separated \
                     segments if any, like \"user:{{id}}\" or \"catalog\" (got {text:?})"
                ),
            ));
        }
        let template = Template::parse(lit).map_err(|e| {
            syn::Error::new(
                lit.span(),
                e.to_string()
                    .replace("`key`", "a tag")
                    .replace("key template", "tag"),
            )
        })?;
        let mut last_ends_segment = true;
        for (i, part) in template.parts.iter().enumerate() {
            let next_starts_segment = match template.parts.get(i + 1) {
                None => true,
                Some(Part::Text(t)) => t.starts_with(':'),
                Some(Part::Arg { .. }) => false,
            };
            match part {
                Part::Arg { .. } if !(last_ends_segment && next_starts_segment) => {
                    return Err(syn::Error::new(
                        lit.span(),
                        format!(
                            "in a tag each `{{value}}` fills a whole segment between `:`s (got {text:?}), \
                             so that `Tag::new(..).value(..)` can name it from code"
                        ),
                    ));
                }
                Part::Arg { .. } => last_ends_segment = false,
                Part::Text(t) => {
                    last_ends_segment = t.ends_with(':');
                    if t.contains("::") || t.starts_with(':') && i == 0 {
                        return Err(syn::Error::new(
                            lit.span(),
                            format!("a tag has no empty segment (got {text:?})"),
                        ));
                    }
                }
            }
        }
        Ok(template)
    }

    /// The argument names the template reads, in order.
    pub fn roots(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Arg { root, .. } => Some(root.as_str()),
            Part::Text(_) => None,
        })
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
        && s != "_"
}

fn parse_placeholder(inner: &str) -> Option<Part> {
    let mut path = inner.trim().split('.');
    let root = path.next().filter(|r| is_ident(r))?.to_owned();
    let fields: Vec<String> = path.map(str::to_owned).collect();
    if fields
        .iter()
        .all(|f| is_ident(f) || (!f.is_empty() && f.bytes().all(|b| b.is_ascii_digit())))
    {
        Some(Part::Arg { root, fields })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::Span;

    use super::*;

    fn parse(text: &str) -> syn::Result<Template> {
        Template::parse(&LitStr::new(text, Span::call_site()))
    }

    fn describe(t: &Template) -> String {
        let mut out = format!("[{}]", t.prefix);
        for part in &t.parts {
            match part {
                Part::Text(s) => out.push_str(s),
                Part::Arg { root, fields } => {
                    out.push('<');
                    out.push_str(root);
                    for f in fields {
                        out.push('.');
                        out.push_str(f);
                    }
                    out.push('>');
                }
            }
        }
        out
    }

    #[test]
    fn parses_text_and_placeholders() {
        assert_eq!(describe(&parse("user:{id}").unwrap()), "[user]<id>");
        assert_eq!(
            describe(&parse("user:{id}:posts:{ page }").unwrap()),
            "[user]<id>:posts:<page>"
        );
        assert_eq!(
            describe(&parse("org/v2:{user.id}:t-{self.tenant.0}").unwrap()),
            "[org/v2]<user.id>:t-<self.tenant.0>"
        );
        let t = parse("a:{x}:v{y}.json").unwrap();
        assert_eq!(t.roots().collect::<Vec<_>>(), ["x", "y"]);
    }

    #[test]
    fn rejects_bad_templates() {
        for (text, needle) in [
            ("{id}", "must start with a prefix"),
            (":{id}", "must start with a prefix"),
            ("a b:{id}", "must start with a prefix"),
            ("user:{id", "unclosed"),
            ("user:{}", "is not an argument name"),
            ("user:{1x}", "is not an argument name"),
            ("user:{a.}", "is not an argument name"),
            ("user:{id}*", "`*` is not allowed"),
            ("user:{id} x", "` ` is not allowed"),
            ("user:}", "`}` is not allowed"),
            ("t:{a}{b}", "`{a}` and `{b}` are not separated by `:`"),
            ("t:{a}-{b}", "`{a}` and `{b}` are not separated by `:`"),
            ("t:{a}:x{b}.{c}", "`{b}` and `{c}` are not separated by `:`"),
            ("t:{a}_{ a }", "`{a}` and `{a}` are not separated by `:`"),
        ] {
            let err = parse(text)
                .err()
                .unwrap_or_else(|| panic!("{text:?} parsed"));
            assert!(err.to_string().contains(needle), "{text:?}: {err}");
        }
    }

    mod properties {
        use std::collections::BTreeMap;

        use cache_aside_runtime::__private::{Layout, key_of};
        use proptest::prelude::*;

        use super::*;

        /// Fixed text a template may hold, placeholders of four arguments, and characters it
        /// may not hold (those templates are rejected and skipped).
        fn template() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                4 => proptest::sample::select(vec![
                    "a", "b", "7", "_", ".", "-", "/", ":", "::", "x:", ":y", "v", ".json",
                ])
                .prop_map(str::to_owned),
                4 => proptest::sample::select(vec!["{p}", "{q}", "{r}", "{s}"]).prop_map(str::to_owned),
                1 => proptest::sample::select(vec!["{", "}", "*", " ", "{p.0}"]).prop_map(str::to_owned),
            ];
            proptest::collection::vec(piece, 0..8)
                .prop_map(|pieces| format!("t:{}", pieces.concat()))
        }

        /// Values drawn from the very characters fixed text uses, so that a template whose
        /// text could be taken for part of a value would show it.
        fn value() -> impl Strategy<Value = String> {
            proptest::string::string_regex("[ab7_./:v-]{0,4}|json|\\.json").unwrap()
        }

        fn render(t: &Template, values: &BTreeMap<String, String>) -> String {
            // Short values: never hashed, so the layout plays no part.
            key_of("ns", &t.prefix, Layout::new(""), |b| {
                for part in &t.parts {
                    match part {
                        Part::Text(text) => b.lit(text),
                        Part::Arg { root, .. } => b.value(&values[root])?,
                    }
                }
                Ok(())
            })
            .unwrap()
        }

        /// `values` with one character moved across the boundary between two of them:
        /// the pair a template must not confuse if its values could run together.
        fn shifted(values: &[String], at: usize, left: bool) -> Vec<String> {
            let mut out = values.to_vec();
            let (i, j) = (at % 3, at % 3 + 1);
            if left {
                if let Some(c) = out[j].chars().next() {
                    out[j].remove(0);
                    out[i].push(c);
                }
            } else if let Some(c) = out[i].pop() {
                out[j].insert(0, c);
            }
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 2048,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]
            /// Every template the attribute accepts writes different argument values to
            /// different keys, and equal ones to one key.
            #[test]
            fn accepted_templates_are_injective(
                text in template(),
                one in proptest::collection::vec(value(), 4),
                other in proptest::collection::vec(value(), 4),
                at in 0usize..3,
                left in any::<bool>(),
                shift in any::<bool>(),
            ) {
                let Ok(t) = parse(&text) else { return Ok(()) };
                let two = if shift { shifted(&one, at, left) } else { other };
                let names = ["p", "q", "r", "s"];
                let used: Vec<&str> = t.roots().collect();
                // Pieces can spell other names (`{` `a` `}`): not arguments of this test.
                if used.iter().any(|root| !names.contains(root)) {
                    return Ok(());
                }
                let pick = |values: &[String]| -> BTreeMap<String, String> {
                    names.iter().zip(values).filter(|(n, _)| used.contains(n))
                        .map(|(n, v)| (n.to_string(), v.clone())).collect()
                };
                let (a, b) = (pick(&one), pick(&two));
                prop_assert_eq!(render(&t, &a) == render(&t, &b), a == b, "{} with {:?} and {:?}", text, a, b);
                prop_assert_eq!(render(&t, &a), render(&t, &a.clone()));
            }
        }
    }
}
