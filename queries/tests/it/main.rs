//! Integration tests of the query layer: SQL goldens of the named query library.

mod flight;
mod goldens;
