use cache_aside_runtime::cached;

struct Users;

impl Users {
    #[cached(ttl = 60, stale = "5m")]
    async fn get(&self, name: &str, tags: Vec<&'static str>, page: u32) -> String {
        format!("{name}{page}{tags:?}")
    }
}

#[cached(ttl = 60, refresh_ahead = 0.8)]
async fn find<'a>(name: &'a str, names: Option<&String>) -> usize {
    name.len() + names.map_or(0, |n| n.len())
}

fn main() {}
