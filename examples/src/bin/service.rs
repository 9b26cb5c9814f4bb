//! The specs' web service: `cargo run -p cache-aside-examples --bin service`.
//!
//! Users in SQLite (a temporary file, created and seeded at start-up), read through
//! `#[cached]`, written through `#[cache_put]` and deleted through `#[cache_evict]`:
//!
//! | route | what |
//! |---|---|
//! | `GET /users/{id}` | the user, cached 60 s; a missing one is a 404 cached 30 s (`none_ttl`) |
//! | `PUT /users/{id}` | `{"name": ".."}`: updates the row; the new user becomes the cached entry |
//! | `DELETE /users/{id}` | deletes the row and evicts the entry |
//! | `GET /cache/stats` | hits, misses, hit rate, puts, evictions, how many queries reached SQLite, and the same per cached function |
//! | `GET /metrics` | the same figures in Prometheus text (`metrics` feature, `metrics-exporter-prometheus`), and the load-time histogram |
//!
//! Runs on the embedded cache, or on Redis with `REDIS_URL=redis://127.0.0.1:6379/`.
//! Listens on `ADDR` (default `127.0.0.1:3000`; port 0 picks a free one), prints
//! `listening on http://..` once it accepts connections, and shuts down gracefully on
//! Ctrl-C (SIGINT) or SIGTERM, removing its database file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cache_aside_runtime::{Cache, cache_evict, cache_put, cached};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    email: String,
}

/// A database failure: a 500, never cached.
#[derive(Debug)]
struct DbError(String);

/// The database: one SQLite connection, used from the blocking pool, and a count of the
/// queries that reached it.
struct Db {
    conn: Mutex<Connection>,
    path: PathBuf,
    queries: AtomicU64,
}

impl Db {
    fn open() -> Result<Db, DbError> {
        let path =
            std::env::temp_dir().join(format!("cache-aside-service-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let conn = Connection::open(&path).map_err(db_error)?;
        conn.execute_batch(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL);",
        )
        .map_err(db_error)?;
        let mut insert = conn
            .prepare("INSERT INTO users (id, name, email) VALUES (?1, ?2, ?3)")
            .map_err(db_error)?;
        for id in 1..=100u64 {
            insert
                .execute(params![
                    id,
                    format!("user {id}"),
                    format!("user{id}@example.com")
                ])
                .map_err(db_error)?;
        }
        drop(insert);
        Ok(Db {
            conn: Mutex::new(conn),
            path,
            queries: AtomicU64::new(0),
        })
    }

    /// Runs `query` on the blocking pool, counted.
    async fn run<T: Send + 'static>(
        &'static self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, DbError> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            query(&conn).map_err(db_error)
        })
        .await
        .map_err(|e| DbError(e.to_string()))?
    }
}

fn db_error(error: rusqlite::Error) -> DbError {
    DbError(error.to_string())
}

fn user_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        name: row.get(1)?,
        email: row.get(2)?,
    })
}

/// The read: `Ok(None)` (no such user) is cached too, for `none_ttl`.
#[cached(ttl = 60, none_ttl = 30, prefix = "user", skip(db))]
async fn get_user(db: &'static Db, id: u64) -> Result<Option<User>, DbError> {
    db.run(move |conn| {
        conn.query_row(
            "SELECT id, name, email FROM users WHERE id = ?1",
            [id],
            user_of,
        )
        .optional()
    })
    .await
}

/// Write-through: the updated user (or `None`: no such user) becomes `get_user(id)`'s entry.
#[cache_put(get_user(id))]
async fn update_user(db: &'static Db, id: u64, name: String) -> Result<Option<User>, DbError> {
    db.run(move |conn| {
        conn.query_row(
            "UPDATE users SET name = ?2 WHERE id = ?1 RETURNING id, name, email",
            params![id, name],
            user_of,
        )
        .optional()
    })
    .await
}

/// Invalidate on write: the next read loads the row, now gone, and caches its absence.
#[cache_evict(get_user(id))]
async fn delete_user(db: &'static Db, id: u64) -> Result<bool, DbError> {
    db.run(move |conn| conn.execute("DELETE FROM users WHERE id = ?1", [id]))
        .await
        .map(|deleted| deleted > 0)
}

#[derive(Clone)]
struct App {
    db: &'static Db,
    cache: Cache,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
}

impl IntoResponse for DbError {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.0).into_response()
    }
}

async fn read(State(app): State<App>, Path(id): Path<u64>) -> Result<Response, DbError> {
    Ok(match get_user(app.db, id).await? {
        Some(user) => Json(user).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    })
}

#[derive(Deserialize)]
struct Update {
    name: String,
}

async fn update(
    State(app): State<App>,
    Path(id): Path<u64>,
    Json(update): Json<Update>,
) -> Result<Response, DbError> {
    Ok(match update_user(app.db, id, update.name).await? {
        Some(user) => Json(user).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    })
}

async fn delete(State(app): State<App>, Path(id): Path<u64>) -> Result<StatusCode, DbError> {
    Ok(match delete_user(app.db, id).await? {
        true => StatusCode::NO_CONTENT,
        false => StatusCode::NOT_FOUND,
    })
}

/// The lesson's stats, with the figures a team watches.
#[derive(Serialize)]
struct CacheStats {
    backend: &'static str,
    hits: u64,
    misses: u64,
    /// hits / (hits + misses), 0 before any read.
    hit_rate: f64,
    loads: u64,
    puts: u64,
    evictions: u64,
    stale_served: u64,
    errors: u64,
    /// Mean body time in microseconds (`load_time_us / loads`), 0 before any load.
    mean_load_us: u64,
    /// Body time the hits saved, estimated from the recent loads, in microseconds.
    time_saved_us: u64,
    /// Queries that reached SQLite, reads and writes.
    db_queries: u64,
    /// The same figures per cached function.
    functions: Vec<FunctionFigures>,
}

#[derive(Serialize)]
struct FunctionFigures {
    function: &'static str,
    prefix: Option<&'static str>,
    hits: u64,
    misses: u64,
    hit_rate: f64,
    loads: u64,
    puts: u64,
    evictions: u64,
}

async fn stats(State(app): State<App>) -> Json<CacheStats> {
    let s = app.cache.stats();
    let reads = s.hits + s.misses;
    Json(CacheStats {
        backend: app.cache.backend_name(),
        hits: s.hits,
        misses: s.misses,
        hit_rate: if reads == 0 {
            0.0
        } else {
            s.hits as f64 / reads as f64
        },
        loads: s.loads,
        puts: s.puts,
        evictions: s.evictions,
        stale_served: s.stale_served,
        errors: s.errors,
        mean_load_us: s.load_time_us.checked_div(s.loads).unwrap_or(0),
        time_saved_us: s.time_saved_us,
        db_queries: app.db.queries.load(Ordering::Relaxed),
        functions: app
            .cache
            .stats_by_function()
            .into_iter()
            .map(|f| FunctionFigures {
                function: f.function,
                prefix: f.prefix,
                hits: f.stats.hits,
                misses: f.stats.misses,
                hit_rate: f.stats.hit_ratio(),
                loads: f.stats.loads,
                puts: f.stats.puts,
                evictions: f.stats.evictions,
            })
            .collect(),
    })
}

/// Prometheus text: the cache's counters are published just before rendering.
async fn metrics(State(app): State<App>) -> String {
    app.cache.record_metrics();
    app.prometheus.render()
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    static DB: OnceLock<Db> = OnceLock::new();
    let db = DB.get_or_init(|| Db::open().expect("the SQLite database"));
    let cache = Cache::builder().namespace("service").from_env()?;
    cache.set_default()?;
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let app = App {
        db,
        cache: cache.clone(),
        prometheus,
    };
    let router = Router::new()
        .route("/users/{id}", get(read).put(update).delete(delete))
        .route("/cache/stats", get(stats))
        .route("/metrics", get(metrics))
        .with_state(app);
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "listening on http://{} (cache: {})",
        listener.local_addr()?,
        cache.backend_name()
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    let _ = std::fs::remove_file(&db.path);
    println!("shut down");
    Ok(())
}
