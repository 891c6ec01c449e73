//! regrpo-engine
