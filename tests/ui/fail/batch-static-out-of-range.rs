// A `Batch` for `Cache::get_many` is checked where it is built: in a `static`, a prefix
// the key format cannot hold, a setting out of range, or a tag template that is not a name
// then fixed or `{}` segments, fails to compile.
use std::time::Duration;

use cache_aside_runtime::batch::Batch;

static BAD_PREFIX: Batch = Batch::new("user:name");

static BAD_TTL: Batch = Batch::new("user").ttl(Duration::ZERO);

static BAD_TAG: Batch = Batch::new("user").tags(&["user:{id}"]);

fn main() {
    let _ = (&BAD_PREFIX, &BAD_TTL, &BAD_TAG);
}
