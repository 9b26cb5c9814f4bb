//! Derived prefixes: a function's path (and type arguments) written into the prefix
//! alphabet `[A-Za-z0-9_.-/]`, injectively.

/// The prefix of one instantiation: the attribute's `prefix` (`given`) followed by the type
/// arguments in `path` and `generics`, or, without one, the function's path `name` included.
/// `path` is the `type_name` of a closure in the generated function; `generics` that of a
/// helper generic over the function's own type and const parameters (`""` without any).
/// Also returns the owner: the path the function is defined at, without its name.
pub(crate) fn render<'p>(
    name: &str,
    given: Option<&str>,
    path: &'p str,
    generics: &str,
) -> (String, &'p str) {
    let path = strip_closures(path);
    let owner = split_last_segment(path).0;
    let own = trailing_group(generics);
    let prefix = match given {
        Some(prefix) => {
            let mut args = generic_groups(owner);
            args.push_str(own);
            let mut out = prefix.to_owned();
            escape_path(&args, &mut out);
            out
        }
        None => {
            let mut out = String::new();
            let full = if owner.is_empty() {
                format!("{name}{own}")
            } else {
                format!("{owner}::{name}{own}")
            };
            escape_path(&full, &mut out);
            out
        }
    };
    (prefix, owner)
}

/// `app::f::{{closure}}::{{closure}}` → `app::f`.
fn strip_closures(mut path: &str) -> &str {
    while let Some(rest) = path.strip_suffix("::{{closure}}") {
        path = rest;
    }
    path
}

/// Walks `path`, calling `at` with each byte index and the depth of `<...>` generic
/// argument lists around it (an `->` arrow is not a bracket).
fn depths(path: &str, mut at: impl FnMut(usize, u8, usize) -> bool) {
    let bytes = path.as_bytes();
    let mut depth = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'<' => depth += 1,
            b'>' if i > 0 && bytes[i - 1] == b'-' => {}
            b'>' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if !at(i, b, depth) {
            return;
        }
    }
}

/// `app::Repo<T>::get<U>` → (`app::Repo<T>`, `get<U>`): split at the last `::` outside
/// angle brackets.
fn split_last_segment(path: &str) -> (&str, &str) {
    let mut split = None;
    depths(path, |i, b, depth| {
        if b == b':' && depth == 0 && path.as_bytes().get(i + 1) == Some(&b':') {
            split = Some(i);
        }
        true
    });
    match split {
        Some(i) => (&path[..i], &path[i + 2..]),
        None => ("", path),
    }
}

/// The `<...>` list that ends `path`, if it ends in one: `app::f::helper<u8, 3>` → `<u8, 3>`.
fn trailing_group(path: &str) -> &str {
    if !path.ends_with('>') {
        return "";
    }
    let mut start = None;
    let mut open_at_depth_one = None;
    depths(path, |i, b, depth| {
        if b == b'<' && depth == 1 {
            open_at_depth_one = Some(i);
        }
        if b == b'>' && depth == 0 && i + 1 == path.len() {
            start = open_at_depth_one;
        }
        true
    });
    start.map_or("", |i| &path[i..])
}

/// Every generic argument list of `path` that follows a name, concatenated:
/// `<app::Repo<u8> as app::Load<i8>>::get` → `<u8><i8>`. A qualified path's own `<...>`
/// is not one of them; the lists inside it are.
fn generic_groups(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::new();
    let mut group: Option<(usize, usize)> = None;
    depths(path, |i, b, depth| {
        match (group, b) {
            (None, b'<') => {
                let after_name = i > 0
                    && (bytes[i - 1].is_ascii_alphanumeric()
                        || bytes[i - 1] == b'_'
                        || bytes[i - 1] >= 0x80);
                if after_name {
                    group = Some((i, depth - 1));
                }
            }
            (Some((start, outer)), b'>') if depth == outer => {
                out.push_str(&path[start..=i]);
                group = None;
            }
            _ => {}
        }
        true
    });
    out
}

/// Writes a Rust path into the prefix alphabet `[A-Za-z0-9_.-/]`, injectively: `::` as
/// `.`, letters, digits and `_` as themselves, every other byte as `-XX`. Rust names hold
/// no `.` or `-`, so distinct paths stay distinct: `app::repo::get_user` → `app.repo.get_user`,
/// `Repo<u8>` → `Repo-3Cu8-3E`.
pub(crate) fn escape_path(path: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b':' && bytes.get(i + 1) == Some(&b':') {
            out.push('.');
            i += 2;
            continue;
        }
        if b.is_ascii_alphanumeric() || b == b'_' {
            out.push(b as char);
        } else {
            out.push('-');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xF)] as char);
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_paths_give_distinct_prefixes() {
        let paths = [
            "a::b_c",
            "a::b::c",
            "a_b::c",
            "a::b-c",
            "a::b.c",
            "a::b::c<u8>",
            "a::b::c<u8, u8>",
            "a::b::c<(u8, u8)>",
            "a::r#try",
            "a::try",
            "a::b<c>::d",
            "a::b::c<d>",
        ];
        let mut seen = std::collections::HashSet::new();
        for path in paths {
            let mut out = String::new();
            escape_path(path, &mut out);
            assert!(crate::key::is_valid_segment(&out), "{out}");
            assert!(seen.insert(out.clone()), "{path} -> {out} twice");
        }
    }
}
