// `#[cached(batch)]` in the forms it takes: slices, vectors, sets, maps, `Result`s, methods
// with `&self`, other arguments skipped (and cloned for each body call).
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use cache_aside_runtime::{Cache, cached};

#[derive(Clone)]
struct Pool(Arc<()>);

#[cached(batch, ttl = 60, none_ttl = 5, prefix = "user")]
async fn by_slice(ids: &[u64]) -> Result<HashMap<u64, String>, std::io::Error> {
    Ok(ids.iter().map(|&id| (id, id.to_string())).collect())
}

#[cached(batch = true, ttl = 60, cache = cache, skip(cache, pool))]
async fn by_vec(cache: &Cache, pool: Pool, mut ids: Vec<String>) -> BTreeMap<String, usize> {
    let _ = &pool.0;
    ids.sort();
    ids.into_iter().map(|id| (id.clone(), id.len())).collect()
}

#[cached(batch, ttl = 60)]
async fn by_set(ids: HashSet<u64>) -> HashMap<u64, u64> {
    ids.into_iter().map(|id| (id, id * 2)).collect()
}

#[cached(batch, ttl = 60)]
async fn by_ref_set(ids: &BTreeSet<(u8, String)>) -> anyhow_like::Result<HashMap<(u8, String), bool>> {
    Ok(ids.iter().map(|id| (id.clone(), true)).collect())
}

mod anyhow_like {
    pub type Result<T> = std::result::Result<T, String>;
}

struct Repo {
    cache: Cache,
}

impl Repo {
    #[cached(batch, ttl = 60, cache = self.cache)]
    async fn names(&self, ids: &Vec<u64>) -> HashMap<u64, String> {
        let _ = &self.cache;
        ids.iter().map(|&id| (id, format!("user {id}"))).collect()
    }
}

fn assert_send<T: Send>(_: T) {}

fn main() {
    let cache = Cache::memory();
    let repo = Repo { cache: cache.clone() };
    assert_send(by_slice(&[1, 2]));
    assert_send(by_vec(&cache, Pool(Arc::new(())), vec!["a".into()]));
    assert_send(by_set(HashSet::new()));
    assert_send(by_ref_set(&BTreeSet::new()));
    assert_send(repo.names(&vec![1]));
}
