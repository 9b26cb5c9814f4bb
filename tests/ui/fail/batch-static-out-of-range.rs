// A `Batch` for `Cache::get_many` is checked where it is built: in a `static`, a prefix
// the key format cannot hold, or a setting out of range, fails to compile.
use std::time::Duration;

use cache_aside_runtime::batch::Batch;

static BAD_PREFIX: Batch = Batch::new("user:name");

static BAD_TTL: Batch = Batch::new("user").ttl(Duration::ZERO);

fn main() {
    let _ = (&BAD_PREFIX, &BAD_TTL);
}
