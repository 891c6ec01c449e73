//! Licenses of published rows: what the curator states per source, what a `LICENSE` file
//! beside a source's files says, and the license of the whole.

use std::collections::BTreeMap;
use std::path::Path;

use regrpo_schemas::Trajectory;

use super::{Example, PublishOptions};

/// The sources of the published rows: `(source, rows, license)` (`None`: not given).
pub(crate) fn source_licenses(splits: &[Vec<Example>], opts: &PublishOptions) -> Vec<(String, usize, Option<String>)> {
    let mut rows: BTreeMap<&str, usize> = BTreeMap::new();
    for e in splits.iter().flatten() {
        *rows.entry(e.source.as_str()).or_default() += 1;
    }
    rows.into_iter()
        .map(|(source, n)| {
            let license = match source {
                "toolworld" => Some(opts.license.clone()),
                other => opts.source_licenses.get(other).cloned(),
            };
            (source.to_string(), n, license)
        })
        .collect()
}

/// The license a `LICENSE` (or `LICENSE.txt`, `LICENSE.md`, `COPYING`) file in `dir` states, as
/// a Hugging Face license id, for the licenses a data folder commonly carries.
pub fn detect_license(dir: &Path) -> Option<String> {
    let text = ["LICENSE", "LICENSE.txt", "LICENSE.md", "COPYING"]
        .iter()
        .find_map(|n| std::fs::read(dir.join(n)).ok())
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).to_string())?;
    let t = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let has = |s: &str| t.contains(s);
    Some(
        if has("Apache License") && has("Version 2.0") {
            "apache-2.0"
        } else if has("MIT License") || has("Permission is hereby granted, free of charge") {
            "mit"
        } else if has("Attribution-NonCommercial 4.0") {
            "cc-by-nc-4.0"
        } else if has("Attribution-ShareAlike 4.0") {
            "cc-by-sa-4.0"
        } else if has("Attribution 4.0 International") {
            "cc-by-4.0"
        } else if has("BSD 3-Clause") {
            "bsd-3-clause"
        } else {
            return None;
        }
        .to_string(),
    )
}

/// Licenses found beside the files each source's trajectories were ingested from (paths as
/// ingest recorded them, relative ones from the current folder): a source whose files agree
/// on one license gets it.
pub(crate) fn detected_source_licenses(trajectories: &[Trajectory]) -> BTreeMap<String, String> {
    let mut folders: BTreeMap<&str, std::collections::BTreeSet<&Path>> = BTreeMap::new();
    for t in trajectories.iter().filter(|t| t.source != "toolworld") {
        if let Some(dir) = Path::new(&t.source_file).parent() {
            folders.entry(t.source.as_str()).or_default().insert(dir);
        }
    }
    folders
        .into_iter()
        .filter_map(|(source, dirs)| {
            let found: std::collections::BTreeSet<Option<String>> = dirs
                .iter()
                .map(|d| detect_license(if d.as_os_str().is_empty() { Path::new(".") } else { d }))
                .collect();
            match found.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(l)] => Some((source.to_string(), l.clone())),
                _ => None,
            }
        })
        .collect()
}

/// The license of the whole: the one license every source shares, or `other`.
pub(crate) fn dataset_license(sources: &[(String, usize, Option<String>)], opts: &PublishOptions) -> String {
    let mut licenses = sources.iter().map(|(_, _, l)| l.as_deref());
    match licenses.next() {
        None => opts.license.clone(),
        Some(Some(first)) if licenses.all(|l| l == Some(first)) => first.to_string(),
        _ => "other".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_license_file_beside_the_data_names_its_license() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(detect_license(dir.path()), None);
        std::fs::write(
            dir.path().join("LICENSE"),
            "MIT License\n\nCopyright (c) 2024 Lab\n\nPermission is hereby granted, free of charge, to any person",
        )
        .unwrap();
        assert_eq!(detect_license(dir.path()).as_deref(), Some("mit"));
        std::fs::write(
            dir.path().join("LICENSE"),
            "                                 Apache License\n                           Version 2.0, January 2004\n",
        )
        .unwrap();
        assert_eq!(detect_license(dir.path()).as_deref(), Some("apache-2.0"));
        std::fs::write(dir.path().join("LICENSE"), "All rights reserved.").unwrap();
        assert_eq!(detect_license(dir.path()), None, "an unknown text is not guessed at");
    }
}
