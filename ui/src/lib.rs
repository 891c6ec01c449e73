//! `regrpo-ui`: the curators' web view of a repository (`regrpo ui`).
//!
//! One axum application served from the binary: every page is an askama template (escaping
//! on, checked at compile time) and every asset (htmx, our script and stylesheet) is compiled
//! in, so nothing is fetched from elsewhere. It reads through the same [`Session`] as the CLI
//! (the tables pinned at a snapshot) and writes only curators' reviews, appended to the
//! `reviews` Delta table.
//!
//! ```text
//!  browser ──HTTP──▶ security (Host, token, Origin, CSRF, CSP) ──▶ pages
//!                                                                   │ SQL, filters bound as parameters
//!                                                                   ▼
//!            Session @ snapshot (rot, near_misses, trajectories, …) + reviews @ latest
//!                                                                   │ review / bulk
//!                                                                   ▼
//!                                                     reviews (Delta, append-only)
//! ```
//!
//! Pages: overview (counts you click to filter, snapshot picker and diff), browse (keyset
//! pages of RoT rows or near-misses under filters kept in the URL), record (the trajectory,
//! the failed action and its observation with the evidence highlighted, the RoT, the corrected
//! action as a diff), review (accept / reject / flag / undo from the keyboard, bulk verdicts on
//! everything a filter matches) and a read-only SQL box with the named-query library.

mod assets;
mod data;
mod pages;
mod security;
mod view;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::routing::{get, post};
use regrpo_datasets::Repository;
use regrpo_queries::{At, Session, TextIndex};
use regrpo_schemas::{Record, Review};
use tokio::net::TcpListener;

pub use data::Filter;
pub use security::{AccessError, check_bind};

/// How to serve the web view.
#[derive(Debug, Clone)]
pub struct UiConfig {
    pub repo: Repository,
    /// The snapshot pages read unless a page names another (`None`: the latest tables).
    pub snapshot: Option<String>,
    /// Where the server listens; its host and port are in the Host allow-list.
    pub addr: SocketAddr,
    /// When set, every request must carry it (header, or the cookie a `?token=` visit sets).
    pub token: Option<String>,
    /// The name reviews are recorded under.
    pub reviewer: String,
    /// Further `Host` values to accept (a name the server is reached by).
    pub allowed_hosts: Vec<String>,
}

/// Snapshots whose sessions stay open at once.
const OPEN_SNAPSHOTS: usize = 4;

/// What every handler shares.
pub(crate) struct App {
    cfg: UiConfig,
    /// The value every state-changing request must carry (`X-CSRF-Token` or a `csrf` field).
    csrf: String,
    /// Open sessions by snapshot, with the `reviews` version each has registered and when a
    /// page last used it (at most [`OPEN_SNAPSHOTS`], the least recently used closed first).
    sessions: tokio::sync::Mutex<HashMap<Option<String>, (Reader, i64, Instant)>>,
    /// The `reviews` version this process last wrote or read.
    reviews_version: AtomicI64,
    /// One review commit at a time from this process (Delta retries the rest).
    writing: tokio::sync::Mutex<()>,
}

impl App {
    fn new(cfg: UiConfig) -> App {
        App {
            csrf: security::random_token(),
            cfg,
            sessions: tokio::sync::Mutex::new(HashMap::new()),
            reviews_version: AtomicI64::new(0),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// The session of snapshot `name` (`None`: the configured one), with the latest reviews.
    pub(crate) async fn session(&self, name: Option<&str>) -> anyhow::Result<Reader> {
        let key = name.map(str::to_string).or_else(|| self.cfg.snapshot.clone());
        let want = self.reviews_version.load(Ordering::SeqCst);
        let mut sessions = self.sessions.lock().await;
        if let Some((s, v, used)) = sessions.get_mut(&key)
            && *v == want
        {
            *used = Instant::now();
            return Ok(s.clone());
        }
        let session = match sessions.get(&key) {
            Some((s, _, _)) => s.clone(),
            None => {
                // A session holds its snapshot's footers, statistics and word indexes: keep a few.
                while sessions.len() >= OPEN_SNAPSHOTS {
                    let Some(oldest) = sessions.iter().min_by_key(|(_, (_, _, used))| *used).map(|(k, _)| k.clone())
                    else {
                        break;
                    };
                    sessions.remove(&oldest);
                }
                Reader::new(&self.cfg.repo, Session::open(&self.cfg.repo, At::from_option(key.as_deref())).await?)
            }
        };
        let v = session.register_latest(&self.cfg.repo, Review::TABLE).await?;
        data::register_latest_reviews(&session).await?;
        self.reviews_version.fetch_max(v, Ordering::SeqCst);
        sessions.insert(key, (session.clone(), v, Instant::now()));
        Ok(session)
    }

    /// Appends reviews as one commit; every session reads them from the next request on.
    pub(crate) async fn append_reviews(&self, reviews: Vec<Review>) -> anyhow::Result<usize> {
        let _one = self.writing.lock().await;
        let done = regrpo_datasets::reviews::append(&self.cfg.repo, reviews).await?;
        if let Some(v) = done.version {
            self.reviews_version.fetch_max(v, Ordering::SeqCst);
        }
        Ok(done.added)
    }

    /// The snapshot a page reads when it names none.
    pub(crate) fn default_snapshot(&self) -> Option<&str> {
        self.cfg.snapshot.as_deref()
    }
}

/// A snapshot's session, with the word indexes of its text columns (built in the background
/// when the session opens; free text waits for a build under way, and scans where a table has
/// no index).
#[derive(Clone)]
pub(crate) struct Reader {
    session: Session,
    repo: Repository,
    rot: Arc<TextSlot>,
    near_misses: Arc<TextSlot>,
}

/// A table's word index: being built, built (`Some`), or not available (`None`: the version
/// needs Delta's reader, or the build failed and was logged).
type TextSlot = tokio::sync::OnceCell<Option<Arc<TextIndex>>>;

impl Reader {
    fn new(repo: &Repository, session: Session) -> Reader {
        let reader = Reader {
            session,
            repo: repo.clone(),
            rot: Arc::new(TextSlot::new()),
            near_misses: Arc::new(TextSlot::new()),
        };
        let r = reader.clone();
        tokio::spawn(async move {
            for table in [RowTable::Rot, RowTable::NearMisses] {
                r.text_index(table).await;
            }
        });
        reader
    }

    /// `table`'s word index, waiting for its build if it is under way (the build started with
    /// the session, so waiting costs less than a scan beside it).
    pub(crate) async fn text_index(&self, table: RowTable) -> Option<Arc<TextIndex>> {
        let slot = match table {
            RowTable::Rot => &self.rot,
            RowTable::NearMisses => &self.near_misses,
        };
        slot.get_or_init(|| async {
            let started = std::time::Instant::now();
            match TextIndex::build(&self.repo, &self.session, table.as_str(), table.text_columns()).await {
                Ok(Some(index)) => {
                    tracing::info!(
                        table = table.as_str(),
                        rows = index.rows(),
                        words = index.words(),
                        seconds = started.elapsed().as_secs_f64(),
                        "text index built"
                    );
                    Some(Arc::new(index))
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(table = table.as_str(), "text index not built, free text scans: {e}");
                    None
                }
            }
        })
        .await
        .clone()
    }
}

impl std::ops::Deref for Reader {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.session
    }
}

/// The application's router, with its security layer.
pub async fn router(cfg: UiConfig) -> anyhow::Result<Router> {
    // Reviews need their table; a repository made before it existed gains it here.
    cfg.repo.ensure_table(Review::TABLE).await?;
    let app = Arc::new(App::new(cfg));
    // Open the default session now: a bad snapshot name fails the start, not the first page.
    app.session(None).await?;
    let routes = Router::new()
        .route("/", get(pages::overview))
        .route("/diff", get(pages::diff))
        .route("/browse", get(pages::browse))
        .route("/record/{table}/{id}", get(pages::record))
        .route("/review", post(pages::review))
        .route("/review/undo", post(pages::undo))
        .route("/bulk", get(pages::bulk_confirm).post(pages::bulk))
        .route("/sql", get(pages::sql))
        .route("/sql.csv", get(pages::sql_csv))
        .route("/assets/{name}", get(assets::asset))
        .fallback(pages::not_found);
    Ok(routes.layer(axum::middleware::from_fn_with_state(Arc::clone(&app), security::guard)).with_state(app))
}

/// Serves the web view on `listener` until `shutdown` resolves.
pub async fn serve(
    cfg: UiConfig,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let router = router(cfg).await?;
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// The table a reviewable row lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowTable {
    Rot,
    NearMisses,
}

impl RowTable {
    pub(crate) fn parse(s: &str) -> Option<RowTable> {
        match s {
            "rot" => Some(RowTable::Rot),
            "near_misses" => Some(RowTable::NearMisses),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RowTable::Rot => regrpo_schemas::Rot::TABLE,
            RowTable::NearMisses => regrpo_schemas::NearMiss::TABLE,
        }
    }

    /// The text columns free text searches (dotted paths for struct fields).
    pub(crate) fn text_columns(self) -> &'static [&'static str] {
        match self {
            RowTable::Rot => &["evidence", "failed_observation"],
            RowTable::NearMisses => &["execution.text"],
        }
    }

    /// The table's id column.
    pub(crate) fn id_column(self) -> &'static str {
        match self {
            RowTable::Rot => regrpo_schemas::Rot::ID,
            RowTable::NearMisses => regrpo_schemas::NearMiss::ID,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_few_snapshots_stay_open_the_least_recently_used_close() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).await.unwrap();
        repo.ensure_table(Review::TABLE).await.unwrap();
        let names: Vec<String> = (0..=OPEN_SNAPSHOTS).map(|i| format!("s{i}")).collect();
        for n in &names {
            regrpo_datasets::snapshot::create(&repo, n, None).await.unwrap();
        }
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let cfg = UiConfig { repo, snapshot: None, addr, token: None, reviewer: "t".into(), allowed_hosts: vec![] };
        let app = App::new(cfg);
        for n in &names[..OPEN_SNAPSHOTS] {
            app.session(Some(n)).await.unwrap();
        }
        app.session(Some(&names[0])).await.unwrap(); // s0 used again: s1 is now the oldest
        app.session(Some(&names[OPEN_SNAPSHOTS])).await.unwrap();
        let open = app.sessions.lock().await;
        assert_eq!(open.len(), OPEN_SNAPSHOTS);
        assert!(open.contains_key(&Some(names[0].clone())) && !open.contains_key(&Some(names[1].clone())));
    }
}
