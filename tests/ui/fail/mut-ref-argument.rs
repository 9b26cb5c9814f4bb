use cache_aside_runtime::cached;

#[cached(ttl = 60)]
async fn append(v: &mut Vec<u8>) -> usize {
    v.push(1);
    v.len()
}

fn main() {}
