//! Integration tests of the query layer: SQL goldens of the named query library, the Flight SQL
//! server, the word index behind free-text search.

mod flight;
mod goldens;
mod text_index;
