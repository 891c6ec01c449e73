//! Where a repository lives: a local folder, or a prefix of an S3 bucket (`s3://bucket/prefix`).
//!
//! Every byte a repository holds (Delta tables, the manifest, snapshot manifests, tool
//! sandboxes) goes through one [`ObjectStore`](object_store::ObjectStore) rooted at the
//! repository, so the two kinds of location share one code path: the local one is
//! `object_store`'s file system store. Delta
//! commits on S3 are safe without a lock: deltalake's default log store writes each commit with
//! put-if-absent (`If-None-Match: *`, which S3 and S3-compatible servers honour), so of two
//! writers racing for a version one wins and the other retries. The unsafe-rename option is
//! never set.
//!
//! Credentials, region and endpoint come from the standard AWS environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`, …), then
//! from storage options (`aws_endpoint`, `aws_allow_http`, … — `object_store`'s S3 keys), which
//! win. The CLI sets the process's options once from `--storage-option k=v`
//! ([`set_process_options`]).

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Once, OnceLock};

use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
    object_store_factories,
};
use deltalake::{DeltaResult, DeltaTableError};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use url::Url;

use crate::error::{Error, Result};

/// A repository's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A folder on this machine (absolute once the repository is open).
    Local(PathBuf),
    /// An object store URL, `s3://bucket/prefix` (no trailing `/`).
    Remote(Url),
}

impl Location {
    /// Reads a location as the CLI takes it: `s3://…` (or `s3a://…`) is a bucket, `file://…`
    /// and anything else a local path.
    pub fn parse(text: &str) -> Result<Location> {
        let Some((scheme, _)) = text.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(text)));
        };
        let url = Url::parse(text).map_err(|e| Error::BadLocation { location: text.into(), reason: e.to_string() })?;
        match scheme {
            "file" => url
                .to_file_path()
                .map(Location::Local)
                .map_err(|()| Error::BadLocation { location: text.into(), reason: "not a local path".into() }),
            "s3" | "s3a" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(Error::BadLocation { location: text.into(), reason: "no bucket name".into() });
                }
                let mut url = url;
                let trimmed = url.path().trim_end_matches('/').to_string();
                url.set_path(&trimmed);
                Ok(Location::Remote(url))
            }
            other => Err(Error::BadLocation {
                location: text.into(),
                reason: format!("`{other}://` is not a supported store (use a local path or s3://bucket/prefix)"),
            }),
        }
    }

    /// The location as the CLI takes it (`s3://…`, or the folder's path).
    pub fn display(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::Remote(u) => u.to_string(),
        }
    }

    /// The URL of `rel` (a `/`-separated path below the location), as a directory when `dir`.
    pub fn join_url(&self, rel: &str, dir: bool) -> Result<Url> {
        let bad = |reason: String| Error::BadLocation { location: self.display(), reason };
        let mut url = match self {
            Location::Local(p) => {
                let full = if rel.is_empty() { p.clone() } else { p.join(rel) };
                Url::from_file_path(&full).map_err(|()| bad(format!("cannot make a URL of {}", full.display())))?
            }
            Location::Remote(u) => {
                let mut u = u.clone();
                let path = format!("{}/{rel}", u.path().trim_end_matches('/'));
                u.set_path(&path);
                u
            }
        };
        if dir && !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(url)
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

/// Storage options for every repository this process opens without its own (`--storage-option`).
static PROCESS_OPTIONS: OnceLock<HashMap<String, String>> = OnceLock::new();

/// Sets the storage options of this process (once, at start-up; later calls are ignored).
/// Keys are `object_store`'s S3 keys, case-blind (`aws_endpoint`, `aws_allow_http`, …).
pub fn set_process_options(options: HashMap<String, String>) {
    let _ = PROCESS_OPTIONS.set(options.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect());
}

/// The process's storage options (empty unless set).
pub fn process_options() -> HashMap<String, String> {
    PROCESS_OPTIONS.get().cloned().unwrap_or_default()
}

/// Makes `s3://` and `s3a://` known to deltalake: an object store built from the AWS
/// environment and the options, and the default (put-if-absent) log store.
pub fn register_object_stores() {
    static DONE: Once = Once::new();
    DONE.call_once(|| {
        for scheme in ["s3://", "s3a://"] {
            let url = Url::parse(scheme).expect("a scheme parses");
            object_store_factories().insert(url.clone(), Arc::new(S3Factory));
            logstore_factories().insert(url, Arc::new(PutIfAbsentLogStores));
        }
    });
}

/// The option keys a repository refuses: renames on S3 are not atomic, and a lock service is
/// not needed (commits are put-if-absent).
const REFUSED_OPTIONS: &[&str] = &["aws_s3_allow_unsafe_rename", "aws_s3_locking_provider"];

/// An S3 store rooted at the bucket of `url`, configured from the environment, then `options`.
pub fn s3_store(url: &Url, options: &HashMap<String, String>) -> Result<object_store::aws::AmazonS3> {
    let bad = |reason: String| Error::BadLocation { location: url.to_string(), reason };
    let mut builder = AmazonS3Builder::from_env().with_url(url.as_str());
    for (key, value) in options {
        let key = key.to_ascii_lowercase();
        if REFUSED_OPTIONS.contains(&key.as_str()) {
            return Err(bad(format!("storage option `{key}` is refused: commits use put-if-absent, never a rename")));
        }
        // Delta's own options (retries, limits) share the map; only S3 keys go to the store.
        if let Ok(k) = AmazonS3ConfigKey::from_str(&key) {
            builder = builder.with_config(k, value);
        }
    }
    builder.build().map_err(|e| bad(e.to_string()))
}

#[derive(Debug)]
struct S3Factory;

impl ObjectStoreFactory for S3Factory {
    fn parse_url_opts(&self, url: &Url, config: &StorageConfig) -> DeltaResult<(ObjectStoreRef, Path)> {
        let store = s3_store(url, &config.raw).map_err(|e| DeltaTableError::Generic(e.to_string()))?;
        let path = Path::from_url_path(url.path()).map_err(|e| DeltaTableError::Generic(e.to_string()))?;
        Ok((Arc::new(store), path))
    }
}

#[derive(Debug)]
struct PutIfAbsentLogStores;

impl LogStoreFactory for PutIfAbsentLogStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(prefixed_store, root_store, location, options))
    }
}

/// The local folder a remote repository's sandboxes are copied to: `$REGRPO_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/regrpo`, else `~/.cache/regrpo`, then `repos/<hash of the URL>`.
pub fn local_cache_for(url: &Url) -> PathBuf {
    use sha2::{Digest, Sha256};
    let base = std::env::var_os("REGRPO_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("regrpo")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("regrpo")))
        .unwrap_or_else(|| std::env::temp_dir().join("regrpo"));
    let digest = hex::encode(Sha256::digest(url.as_str().as_bytes()));
    base.join("repos").join(&digest[..16])
}

/// An object path of a `/`-separated relative path.
pub(crate) fn object_path(rel: &str) -> Result<Path> {
    Path::parse(rel).map_err(|e| Error::Internal(format!("object path {rel}: {e}")))
}

/// The local path of an object below `root`.
pub(crate) fn local_path_of(root: &FsPath, rel: &str) -> PathBuf {
    rel.split('/').filter(|p| !p.is_empty()).fold(root.to_path_buf(), |p, part| p.join(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_as_the_cli_takes_them() {
        assert_eq!(Location::parse("some/dir").unwrap(), Location::Local("some/dir".into()));
        assert_eq!(Location::parse("file:///tmp/r").unwrap(), Location::Local("/tmp/r".into()));
        let s3 = Location::parse("s3://bucket/team/repo/").unwrap();
        assert_eq!(s3.display(), "s3://bucket/team/repo");
        assert_eq!(s3.join_url("tables/rot", true).unwrap().as_str(), "s3://bucket/team/repo/tables/rot/");
        assert_eq!(
            Location::parse("s3://bucket").unwrap().join_url("regrpo.json", false).unwrap().as_str(),
            "s3://bucket/regrpo.json"
        );
        for bad in ["s3:///nobucket", "gs://b/p"] {
            let e = Location::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn unsafe_rename_is_refused() {
        let url = Url::parse("s3://b/p").unwrap();
        let opts = HashMap::from([("AWS_S3_ALLOW_UNSAFE_RENAME".to_string(), "true".to_string())]);
        let e = s3_store(&url, &opts).unwrap_err().to_string();
        assert!(e.contains("aws_s3_allow_unsafe_rename"), "{e}");
    }
}
