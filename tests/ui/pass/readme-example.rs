//! The README example: a free `async fn` returning `Result<User, DbError>`, where only
//! `User` is serializable.

use cache_aside_runtime::{Cache, cached};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Debug)]
struct DbError;

async fn load_user_from_db(id: u64) -> Result<User, DbError> {
    if id == 0 {
        return Err(DbError);
    }
    Ok(User {
        id,
        name: format!("user{id}"),
    })
}

#[cached(ttl = 60, prefix = "user")]
async fn get_user(id: u64) -> Result<User, DbError> {
    load_user_from_db(id).await
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        Cache::memory().set_default().unwrap();
        let user = get_user(42).await.unwrap();
        assert_eq!(user.name, "user42");
        assert_eq!(get_user(42).await.unwrap(), user);
        assert!(get_user(0).await.is_err());
        assert!(get_user_invalidate(42).await.unwrap());
        assert_eq!(get_user_cache_key(42).unwrap(), "ca:user:42");
    });
}
