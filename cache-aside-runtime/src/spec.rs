//! What `#[cached]` knows about one function, as a `static` in the generated code.

use std::sync::OnceLock;
use std::time::Duration;

/// The static description of one cached function. Built by generated code only.
#[doc(hidden)]
pub struct FnSpec {
    module_path: &'static str,
    name: &'static str,
    prefix: Option<&'static str>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) none_ttl: Option<Duration>,
    derived_prefix: OnceLock<Box<str>>,
}

impl FnSpec {
    /// `ttl_ms`/`none_ttl_ms` of 0 mean "not set".
    pub const fn new(
        module_path: &'static str,
        name: &'static str,
        prefix: Option<&'static str>,
        ttl_ms: u64,
        none_ttl_ms: u64,
    ) -> Self {
        FnSpec {
            module_path,
            name,
            prefix,
            ttl: if ttl_ms == 0 {
                None
            } else {
                Some(Duration::from_millis(ttl_ms))
            },
            none_ttl: if none_ttl_ms == 0 {
                None
            } else {
                Some(Duration::from_millis(none_ttl_ms))
            },
            derived_prefix: OnceLock::new(),
        }
    }

    /// The key prefix: the attribute's `prefix`, else the function's path with `.` for `::`.
    /// Methods (`self_type` given) use the `Self` type's path instead of the module's, so
    /// `Users::get` and `Orders::get` in one module never share keys.
    pub(crate) fn prefix(&self, self_type: Option<fn() -> &'static str>) -> &str {
        if let Some(prefix) = self.prefix {
            return prefix;
        }
        self.derived_prefix.get_or_init(|| {
            let owner = self_type.map_or(self.module_path, |type_name| type_name());
            derive_prefix(owner, self.name).into_boxed_str()
        })
    }
}

/// `my_app::repo::Users<T>` + `get` → `my_app.repo.Users.get`: generic arguments dropped
/// (statics are shared by all instantiations), `::` as `.`, anything outside the key-safe
/// set as `_`.
fn derive_prefix(owner: &str, name: &str) -> String {
    let owner = owner
        .split('<')
        .next()
        .unwrap_or(owner)
        .trim_start_matches(['&', '*']);
    let mut out = owner.replace("::", ".");
    out.push('.');
    out.push_str(name);
    out.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_prefixes_from_paths() {
        assert_eq!(derive_prefix("app::repo", "get_user"), "app.repo.get_user");
        assert_eq!(
            derive_prefix("app::Users<alloc::string::String>", "get"),
            "app.Users.get"
        );
        assert_eq!(derive_prefix("&app::Users", "get"), "app.Users.get");
        assert_eq!(derive_prefix("r#try", "r#fn"), "r_try.r_fn");
    }

    #[test]
    fn explicit_prefix_wins_and_derived_one_is_cached() {
        let spec = FnSpec::new("m", "f", Some("user"), 60_000, 0);
        assert_eq!(spec.prefix(None), "user");
        assert_eq!(spec.ttl, Some(Duration::from_secs(60)));
        assert_eq!(spec.none_ttl, None);
        let spec = FnSpec::new("app::m", "f", None, 0, 0);
        assert_eq!(spec.prefix(Some(|| "app::Repo")), "app.Repo.f");
        assert_eq!(spec.prefix(None), "app.Repo.f");
    }
}
