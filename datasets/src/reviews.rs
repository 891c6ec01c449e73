//! Curators' reviews of generated rows: an append-only `reviews` table (one Delta commit per
//! review or bulk action, never an edit) whose latest review per row is that row's verdict.

use std::collections::HashMap;

use regrpo_schemas::{Record, Review, Verdict};

use crate::error::Result;
use crate::repo::{Appended, Repository};

/// Appends reviews as one commit (creating the table in a repository made before it existed).
/// Appending the same review twice adds it once.
pub async fn append(repo: &Repository, reviews: Vec<Review>) -> Result<Appended> {
    repo.ensure_table(Review::TABLE).await?;
    repo.appender::<Review>().await?.append(reviews, "review").await
}

/// Every review of the repository, oldest first (by time, then id).
pub async fn all(repo: &Repository) -> Result<Vec<Review>> {
    if !repo.present_tables().await?.contains(&Review::TABLE) {
        return Ok(Vec::new());
    }
    let mut reviews = repo.read::<Review>(None).await?;
    reviews.sort_by(|a, b| (a.reviewed_at, &a.review_id).cmp(&(b.reviewed_at, &b.review_id)));
    Ok(reviews)
}

/// The verdict of every reviewed row: its latest review's, `clear` meaning unreviewed.
#[derive(Debug, Default, Clone)]
pub struct Verdicts {
    latest: HashMap<String, Verdict>,
}

impl Verdicts {
    /// The verdicts as the repository's reviews stand now.
    pub async fn load(repo: &Repository) -> Result<Verdicts> {
        Ok(Verdicts::from_reviews(&all(repo).await?))
    }

    /// The verdicts of reviews given oldest first.
    pub fn from_reviews(reviews: &[Review]) -> Verdicts {
        let mut latest = HashMap::new();
        for r in reviews {
            match r.verdict() {
                Some(Verdict::Clear) => {
                    latest.remove(&r.row_id);
                }
                Some(v) => {
                    latest.insert(r.row_id.clone(), v);
                }
                None => {}
            }
        }
        Verdicts { latest }
    }

    /// The row's verdict; `None` when it was never reviewed or its review was cleared.
    pub fn of(&self, row_id: &str) -> Option<Verdict> {
        self.latest.get(row_id).copied()
    }

    /// How many rows hold a verdict.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

/// The verdict row `row_id` held before its latest review (what undoing that review restores):
/// `None` where the latest review was its first.
pub fn before_latest(history: &[Review], row_id: &str) -> Option<Option<Verdict>> {
    let of_row: Vec<&Review> = history.iter().filter(|r| r.row_id == row_id).collect();
    let (_, earlier) = of_row.split_last()?;
    Some(earlier.last().and_then(|r| r.verdict()).filter(|v| *v != Verdict::Clear))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(row: &str, v: Verdict, at: i64) -> Review {
        Review::new("rot", row, v, None, "ann", at, None)
    }

    #[tokio::test]
    async fn the_latest_review_of_a_row_is_its_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path().join("repo")).await.unwrap();
        assert!(Verdicts::load(&repo).await.unwrap().is_empty());
        let first =
            append(&repo, vec![review("a", Verdict::Accept, 1), review("b", Verdict::Reject, 1)]).await.unwrap();
        assert_eq!(first.added, 2);
        let again = append(&repo, vec![review("a", Verdict::Accept, 1)]).await.unwrap();
        assert_eq!((again.added, again.version), (0, None));
        append(&repo, vec![review("a", Verdict::Reject, 2), review("b", Verdict::Clear, 2)]).await.unwrap();
        let v = Verdicts::load(&repo).await.unwrap();
        assert_eq!((v.of("a"), v.of("b"), v.len()), (Some(Verdict::Reject), None, 1));
        let history = all(&repo).await.unwrap();
        assert_eq!(before_latest(&history, "a"), Some(Some(Verdict::Accept)));
        assert_eq!(before_latest(&history, "b"), Some(Some(Verdict::Reject)));
        assert_eq!(before_latest(&history, "c"), None);
        // Every review was a new version: the table was never rewritten.
        assert_eq!(repo.load("reviews", None).await.unwrap().version(), Some(2));
    }

    #[tokio::test]
    async fn an_older_repository_gains_the_table_on_first_review() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path().join("repo")).await.unwrap();
        std::fs::remove_dir_all(repo.table_path("reviews").unwrap()).unwrap();
        assert!(!repo.versions().await.unwrap().contains_key("reviews"));
        assert!(all(&repo).await.unwrap().is_empty());
        append(&repo, vec![review("a", Verdict::Flag, 1)]).await.unwrap();
        assert_eq!(repo.versions().await.unwrap().get("reviews"), Some(&1));
    }
}
