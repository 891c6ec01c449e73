//! Tells the tests that need outside programs whether this machine has them:
//! `cfg(has_browser)` where chromedriver and Chromium are installed (Debian: `chromium`,
//! `chromium-driver`), `cfg(has_s3_server)` where `moto_server` (or `$REGRPO_MOTO_SERVER`) is.
//! Without them the tests are ignored, naming what is missing; with `REGRPO_REQUIRE_BROWSER=1`
//! / `REGRPO_REQUIRE_S3=1` (both set by `.ci/run`) a missing one fails the build instead.

use std::path::{Path, PathBuf};

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

fn main() {
    browser();
    s3_server();
}

/// The local S3-compatible server of `tests/it/s3.rs`.
fn s3_server() {
    println!("cargo::rustc-check-cfg=cfg(has_s3_server)");
    println!("cargo::rerun-if-env-changed=REGRPO_REQUIRE_S3");
    println!("cargo::rerun-if-env-changed=REGRPO_MOTO_SERVER");
    let found = match std::env::var_os("REGRPO_MOTO_SERVER") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => on_path("moto_server"),
    };
    match found {
        Some(p) => {
            println!("cargo::rerun-if-changed={}", p.display());
            println!("cargo::rustc-cfg=has_s3_server");
        }
        None => {
            if std::env::var_os("REGRPO_REQUIRE_S3").is_some_and(|v| v == "1") {
                panic!("REGRPO_REQUIRE_S3=1 but moto_server is not installed (pip install 'moto[server]>=5.2.1')");
            }
            println!("cargo::warning=S3 tests ignored: moto_server not installed (pip install 'moto[server]>=5.2.1')");
        }
    }
}

fn browser() {
    println!("cargo::rustc-check-cfg=cfg(has_browser)");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=REGRPO_REQUIRE_BROWSER");
    let driver = on_path("chromedriver");
    let chromium = on_path("chromium").or_else(|| on_path("chromium-browser"));
    // Rerun when either is installed or removed.
    for p in [&driver, &chromium] {
        match p {
            Some(p) => println!("cargo::rerun-if-changed={}", p.display()),
            None => {
                if Path::new("/usr/bin").is_dir() {
                    println!("cargo::rerun-if-changed=/usr/bin");
                }
            }
        }
    }
    match (driver, chromium) {
        (Some(_), Some(_)) => println!("cargo::rustc-cfg=has_browser"),
        (d, c) => {
            let missing = [d.is_none().then_some("chromedriver"), c.is_none().then_some("chromium")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" and ");
            if std::env::var_os("REGRPO_REQUIRE_BROWSER").is_some_and(|v| v == "1") {
                panic!(
                    "REGRPO_REQUIRE_BROWSER=1 but {missing} is not installed (apt-get install chromium chromium-driver)"
                );
            }
            println!(
                "cargo::warning=browser tests ignored: {missing} not installed (apt-get install chromium chromium-driver)"
            );
        }
    }
}
