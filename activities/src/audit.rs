//! `etlctl audit`: data quality of the current catalog, one report per source, with flags
//! where a documented threshold is crossed.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::{error::EtlError, pg::PgStore};

/// The optional fields whose NULL share is reported (images: an empty list).
pub const OPTIONAL_FIELDS: [&str; 6] = [
    "price",
    "brand",
    "description",
    "weight",
    "images",
    "availability",
];

/// Where a report gets a flag. Returned in the JSON so a reader knows what was applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Per optional field, the largest NULL share that is not flagged.
    pub max_null_share: Vec<(String, f64)>,
    /// Share of priced items below 10 with three or more decimals ("1,299" read as 1.299).
    pub max_suspicious_price_share: f64,
    /// Share of weighed items outside 1 g .. 100 kg.
    pub max_weight_out_of_range_share: f64,
    pub max_empty_names: u64,
    pub max_days_since_last_ingest: f64,
    /// Invalid rows / rows of the source's last finished job.
    pub max_last_job_invalid_rate: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            max_null_share: vec![
                ("price".into(), 0.05),
                ("brand".into(), 0.5),
                ("description".into(), 0.5),
                ("weight".into(), 0.5),
                ("images".into(), 0.2),
                ("availability".into(), 0.2),
            ],
            max_suspicious_price_share: 0.001,
            max_weight_out_of_range_share: 0.01,
            max_empty_names: 0,
            max_days_since_last_ingest: 2.0,
            max_last_job_invalid_rate: 0.05,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NullShare {
    pub field: String,
    pub nulls: u64,
    pub share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    pub check: String,
    pub value: f64,
    pub threshold: f64,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceAudit {
    pub source: String,
    /// Listed items: the current catalog every other figure describes.
    pub items: u64,
    /// Items delisted by a snapshot that no longer mentioned them.
    pub delisted: u64,
    pub null_shares: Vec<NullShare>,
    pub suspicious_prices: u64,
    pub median_price: Option<f64>,
    pub weights_out_of_range: u64,
    pub empty_names: u64,
    pub last_completed_ingest_at: Option<String>,
    pub days_since_last_ingest: Option<f64>,
    pub last_job_id: Option<String>,
    pub last_job_invalid_rate: Option<f64>,
    pub flags: Vec<Flag>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    pub thresholds: Thresholds,
    pub sources: Vec<SourceAudit>,
    pub flagged_sources: u64,
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl SourceAudit {
    fn raise_flags(&mut self, thresholds: &Thresholds, priced: u64, weighed: u64) {
        let mut flags = Vec::new();
        let mut flag = |check: &str, value: f64, threshold: f64, message: String| {
            if value > threshold {
                flags.push(Flag {
                    check: check.to_owned(),
                    value,
                    threshold,
                    message,
                });
            }
        };
        for null in &self.null_shares {
            if let Some((_, max)) = thresholds
                .max_null_share
                .iter()
                .find(|(field, _)| *field == null.field)
            {
                flag(
                    &format!("null_share.{}", null.field),
                    null.share,
                    *max,
                    format!(
                        "{} of {} items have no {} ({:.1}%)",
                        null.nulls,
                        self.items,
                        null.field,
                        null.share * 100.0
                    ),
                );
            }
        }
        flag(
            "suspicious_prices",
            share(self.suspicious_prices, priced),
            thresholds.max_suspicious_price_share,
            format!(
                "{} prices below 10 with three or more decimals: a thousands separator read as a \
                 decimal point?",
                self.suspicious_prices
            ),
        );
        flag(
            "weights_out_of_range",
            share(self.weights_out_of_range, weighed),
            thresholds.max_weight_out_of_range_share,
            format!(
                "{} weights outside 1 g .. 100 kg",
                self.weights_out_of_range
            ),
        );
        flag(
            "empty_names",
            self.empty_names as f64,
            thresholds.max_empty_names as f64,
            format!("{} items with an empty name", self.empty_names),
        );
        match self.days_since_last_ingest {
            Some(days) => flag(
                "days_since_last_ingest",
                days,
                thresholds.max_days_since_last_ingest,
                format!("last completed ingest {days:.1} days ago"),
            ),
            None => flag(
                "days_since_last_ingest",
                f64::INFINITY,
                thresholds.max_days_since_last_ingest,
                "no completed ingest".to_owned(),
            ),
        }
        if let Some(rate) = self.last_job_invalid_rate {
            flag(
                "last_job_invalid_rate",
                rate,
                thresholds.max_last_job_invalid_rate,
                format!("{:.1}% of the last job's rows were invalid", rate * 100.0),
            );
        }
        self.flags = flags;
    }
}

impl PgStore {
    pub async fn audit(
        &self,
        source: Option<&str>,
        thresholds: &Thresholds,
    ) -> Result<AuditReport, EtlError> {
        let rows = sqlx::query(
            "WITH sources AS (
                 SELECT source FROM catalog_items WHERE $1::text IS NULL OR source = $1
                 UNION
                 SELECT source FROM etl_jobs WHERE NOT dry_run AND ($1::text IS NULL OR source = $1)
             ),
             items AS (
                 SELECT source, count(*) AS items,
                        count(*) FILTER (WHERE price IS NULL) AS price_nulls,
                        count(*) FILTER (WHERE brand IS NULL) AS brand_nulls,
                        count(*) FILTER (WHERE description IS NULL) AS description_nulls,
                        count(*) FILTER (WHERE weight_grams IS NULL) AS weight_nulls,
                        count(*) FILTER (WHERE cardinality(image_urls) = 0) AS images_nulls,
                        count(*) FILTER (WHERE availability IS NULL) AS availability_nulls,
                        count(*) FILTER (WHERE price IS NOT NULL) AS priced,
                        count(*) FILTER (WHERE price < 10 AND scale(price) >= 3) AS suspicious_prices,
                        percentile_cont(0.5) WITHIN GROUP (ORDER BY price) AS median_price,
                        count(*) FILTER (WHERE weight_grams IS NOT NULL) AS weighed,
                        count(*) FILTER (WHERE weight_grams < 1 OR weight_grams > 100000)
                            AS weights_out_of_range,
                        count(*) FILTER (WHERE btrim(name) = '') AS empty_names
                 FROM catalog_items
                 WHERE ($1::text IS NULL OR source = $1) AND delisted_at IS NULL
                 GROUP BY source
             ),
             delisted AS (
                 SELECT source, count(*) AS delisted FROM catalog_items
                 WHERE ($1::text IS NULL OR source = $1) AND delisted_at IS NOT NULL
                 GROUP BY source
             ),
             last_completed AS (
                 SELECT source, max(finished_at) AS finished_at FROM etl_jobs
                 WHERE status = 'completed' AND NOT dry_run GROUP BY source
             ),
             last_job AS (
                 SELECT DISTINCT ON (source) source, id, rows_total, rows_invalid FROM etl_jobs
                 WHERE NOT dry_run AND status IN ('completed', 'failed') AND rows_total IS NOT NULL
                 ORDER BY source, finished_at DESC NULLS LAST, created_at DESC
             )
             SELECT s.source, coalesce(i.items, 0) AS items,
                    coalesce(d.delisted, 0) AS delisted,
                    coalesce(i.price_nulls, 0) AS price_nulls,
                    coalesce(i.brand_nulls, 0) AS brand_nulls,
                    coalesce(i.description_nulls, 0) AS description_nulls,
                    coalesce(i.weight_nulls, 0) AS weight_nulls,
                    coalesce(i.images_nulls, 0) AS images_nulls,
                    coalesce(i.availability_nulls, 0) AS availability_nulls,
                    coalesce(i.priced, 0) AS priced,
                    coalesce(i.suspicious_prices, 0) AS suspicious_prices,
                    i.median_price,
                    coalesce(i.weighed, 0) AS weighed,
                    coalesce(i.weights_out_of_range, 0) AS weights_out_of_range,
                    coalesce(i.empty_names, 0) AS empty_names,
                    c.finished_at AS last_completed_at,
                    extract(epoch FROM now() - c.finished_at)::float8 / 86400 AS days_since,
                    l.id AS last_job_id, l.rows_total AS last_rows, l.rows_invalid AS last_invalid
             FROM sources s
             LEFT JOIN items i USING (source)
             LEFT JOIN delisted d USING (source)
             LEFT JOIN last_completed c USING (source)
             LEFT JOIN last_job l USING (source)
             ORDER BY s.source",
        )
        .bind(source)
        .fetch_all(self.pool())
        .await?;
        let count = |row: &sqlx::postgres::PgRow, column: &str| row.get::<i64, _>(column) as u64;
        let mut sources = Vec::with_capacity(rows.len());
        for row in &rows {
            let items = count(row, "items");
            let null_shares = OPTIONAL_FIELDS
                .iter()
                .map(|field| {
                    let nulls = count(row, &format!("{field}_nulls"));
                    NullShare {
                        field: (*field).to_owned(),
                        nulls,
                        share: share(nulls, items),
                    }
                })
                .collect();
            let last_rows = row.get::<Option<i64>, _>("last_rows");
            let last_invalid = row.get::<Option<i64>, _>("last_invalid");
            let mut audit = SourceAudit {
                source: row.get("source"),
                items,
                delisted: count(row, "delisted"),
                null_shares,
                suspicious_prices: count(row, "suspicious_prices"),
                median_price: row.get("median_price"),
                weights_out_of_range: count(row, "weights_out_of_range"),
                empty_names: count(row, "empty_names"),
                last_completed_ingest_at: row
                    .get::<Option<chrono::DateTime<chrono::Utc>>, _>("last_completed_at")
                    .map(crate::pg::timestamp),
                days_since_last_ingest: row.get("days_since"),
                last_job_id: row
                    .get::<Option<uuid::Uuid>, _>("last_job_id")
                    .map(|id| id.to_string()),
                last_job_invalid_rate: match (last_rows, last_invalid) {
                    (Some(rows), Some(invalid)) => Some(share(invalid as u64, rows as u64)),
                    _ => None,
                },
                flags: Vec::new(),
            };
            audit.raise_flags(thresholds, count(row, "priced"), count(row, "weighed"));
            sources.push(audit);
        }
        let flagged_sources = sources.iter().filter(|s| !s.flags.is_empty()).count() as u64;
        Ok(AuditReport {
            thresholds: thresholds.clone(),
            sources,
            flagged_sources,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(items: u64) -> SourceAudit {
        SourceAudit {
            source: "s".into(),
            items,
            delisted: 0,
            null_shares: OPTIONAL_FIELDS
                .iter()
                .map(|f| NullShare {
                    field: (*f).into(),
                    nulls: 0,
                    share: 0.0,
                })
                .collect(),
            suspicious_prices: 0,
            median_price: Some(12.5),
            weights_out_of_range: 0,
            empty_names: 0,
            last_completed_ingest_at: None,
            days_since_last_ingest: Some(0.5),
            last_job_id: None,
            last_job_invalid_rate: Some(0.01),
            flags: Vec::new(),
        }
    }

    #[test]
    fn a_clean_source_has_no_flags() {
        let mut audit = clean(100);
        audit.raise_flags(&Thresholds::default(), 100, 100);
        assert!(audit.flags.is_empty(), "{:?}", audit.flags);
    }

    #[test]
    fn each_crossed_threshold_flags_once() {
        let mut audit = clean(100);
        audit.null_shares[0].nulls = 10;
        audit.null_shares[0].share = 0.1;
        audit.suspicious_prices = 1;
        audit.weights_out_of_range = 2;
        audit.empty_names = 1;
        audit.days_since_last_ingest = Some(3.0);
        audit.last_job_invalid_rate = Some(0.2);
        audit.raise_flags(&Thresholds::default(), 100, 100);
        let checks: Vec<&str> = audit.flags.iter().map(|f| f.check.as_str()).collect();
        assert_eq!(
            checks,
            [
                "null_share.price",
                "suspicious_prices",
                "weights_out_of_range",
                "empty_names",
                "days_since_last_ingest",
                "last_job_invalid_rate"
            ]
        );
    }

    #[test]
    fn a_source_never_ingested_is_flagged_stale() {
        let mut audit = clean(0);
        audit.days_since_last_ingest = None;
        audit.last_job_invalid_rate = None;
        audit.raise_flags(&Thresholds::default(), 0, 0);
        assert_eq!(audit.flags.len(), 1);
        assert_eq!(audit.flags[0].check, "days_since_last_ingest");
    }
}
