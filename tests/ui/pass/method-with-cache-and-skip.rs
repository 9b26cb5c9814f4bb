//! An inherent `&self` method reading its cache from `self` and leaving a client out of the
//! key.

use std::sync::atomic::{AtomicU32, Ordering};

use cache_aside_runtime::{Cache, cached};

struct Db {
    loads: AtomicU32,
}

impl Db {
    async fn load(&self, id: u64) -> Result<String, std::io::Error> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        Ok(format!("row{id}"))
    }
}

struct Users {
    cache: Cache,
}

impl Users {
    #[cached(ttl = 300, cache = self.cache, skip(db))]
    async fn get(&self, db: &Db, id: u64) -> Result<String, std::io::Error> {
        db.load(id).await
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let users = Users {
            cache: Cache::memory(),
        };
        let db = Db {
            loads: AtomicU32::new(0),
        };
        assert_eq!(users.get(&db, 1).await.unwrap(), "row1");
        assert_eq!(users.get(&db, 1).await.unwrap(), "row1");
        assert_eq!(db.loads.load(Ordering::SeqCst), 1);
        // `db` is skipped: the companions take only the receiver and `id`.
        // The default prefix of a method is the `Self` type's path, `.` for `::`.
        let prefix = format!("{}.Users.get", module_path!().replace("::", "."));
        assert_eq!(users.get_cache_key(1).unwrap(), format!("ca:{prefix}:1"));
        assert!(users.get_invalidate(1).await.unwrap());
        assert_eq!(users.get_invalidate_all().await.unwrap(), 0);
    });
}
