//! The forms `#[cache_evict]` and `#[cache_put]` take: free functions and methods,
//! several targets, every entry, `before`, `always`, a body with `?` and `return`, and a
//! `Send` future (it can be spawned).
use cache_aside_runtime::{Cache, cache_evict, cache_put, cached};

#[cached(ttl = 60, prefix = "user")]
async fn get_user(id: u64) -> Result<Option<String>, String> {
    Ok(Some(id.to_string()))
}

#[cached(ttl = 60, prefix = "name")]
async fn name_of(id: u64, lang: &str) -> String {
    format!("{id}{lang}")
}

#[cache_evict(get_user(id), name_of(id, "en"), name_of(..))]
async fn rename(id: u64, name: String) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    let parsed: u64 = name.parse().map_err(|_| "not a number".to_owned())?;
    let _ = parsed;
    Ok(())
}

#[cache_evict(get_user(id), before = true)]
async fn before(id: u64) {}

#[cache_evict(get_user(id), always = true, before = false)]
async fn always(id: u64) -> Result<u8, String> {
    Err("no".into())
}

#[cache_put(get_user(id))]
async fn save(id: u64, name: String) -> Result<Option<String>, std::io::Error> {
    Ok(Some(name))
}

#[cache_put(name_of(id, &lang))]
async fn save_name(id: u64, lang: String) -> String {
    lang
}

struct Repo {
    cache: Cache,
}

impl Repo {
    #[cached(ttl = 60, cache = self.cache)]
    async fn find(&self, id: u64) -> u64 {
        id
    }

    #[cache_put(self.find(id))]
    async fn store(&self, id: u64) -> u64 {
        id
    }

    #[cache_evict(self.find(id), Self::find(self, id + 1), self.find(..))]
    async fn drop_it(&mut self, id: u64) {}
}

fn assert_send<F: Future + Send>(_: F) {}

fn main() {
    assert_send(rename(1, String::new()));
    assert_send(save(1, String::new()));
    let mut repo = Repo {
        cache: Cache::memory(),
    };
    assert_send(repo.store(1));
    assert_send(repo.drop_it(1));
    let _ = (before(1), always(1), save_name(1, "x".into()));
}
