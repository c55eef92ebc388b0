//! The input contract (`shared/CATALOG_CSV.md`): header mapping and per-record validation.
//! Pure code: no I/O, so the planner, the chunk activity, the fuzz target and the unit tests all
//! judge a record the same way.

mod header;
mod url_rule;
mod validate;

pub use header::{Column, Header, HeaderError};
pub use url_rule::{UrlError, check_url};
pub use validate::{Availability, FieldError, RawRecord, ValidItem, validate_record};

/// Raw records are stored truncated to this many bytes (on a UTF-8 character boundary).
pub const RAW_RECORD_LIMIT: usize = 8 * 1024;
