//! regrpo-trainer
