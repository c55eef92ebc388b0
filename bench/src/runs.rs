//! Several runs of a benchmark, summed up: min / median / max of each figure, and issue 18's
//! targets judged on the median. One run on two shared cores is noise: runs of one build
//! spread ±10–15%, so a target is met by the middle run, not the best.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use serde::Serialize;

/// Min, median and max of one figure over the runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no values. The median of an even count is the mean of the middle two.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut values: Vec<f64> = values.into_iter().collect();
        values.sort_by(f64::total_cmp);
        let (&min, &max) = (values.first()?, values.last()?);
        let middle = values.len() / 2;
        let median = if values.len() % 2 == 1 {
            values[middle]
        } else {
            (values[middle - 1] + values[middle]) / 2.0
        };
        Some(Self { min, median, max })
    }

    /// `min / median / max` with `decimals` digits.
    pub fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} / {:.d$} / {:.d$}",
            self.min,
            self.median,
            self.max,
            d = decimals
        )
    }
}

/// Which way a figure must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    AtMost,
    AtLeast,
}

/// One of issue 18's targets, judged on the median of the runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetCheck {
    pub figure: &'static str,
    pub bound: Bound,
    pub target: f64,
    pub median: f64,
    pub met: bool,
}

impl TargetCheck {
    pub fn judge(figure: &'static str, bound: Bound, target: f64, spread: Spread) -> Self {
        let met = match bound {
            Bound::AtMost => spread.median <= target,
            Bound::AtLeast => spread.median >= target,
        };
        Self {
            figure,
            bound,
            target,
            median: spread.median,
            met,
        }
    }
}

impl fmt::Display for TargetCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self.bound {
            Bound::AtMost => "≤",
            Bound::AtLeast => "≥",
        };
        write!(
            f,
            "{}: median {:.2}, target {sign} {} — {}",
            self.figure,
            self.median,
            self.target,
            if self.met { "met" } else { "MISSED" }
        )
    }
}

/// Every service any of `maps` names, in order: a service idle in one run or scenario is
/// still a row of the table.
pub fn services<'a, V: 'a>(
    maps: impl IntoIterator<Item = &'a BTreeMap<String, V>>,
) -> BTreeSet<&'a String> {
    maps.into_iter().flat_map(BTreeMap::keys).collect()
}

/// CPU seconds per service over the runs. A service missing from a run (Postgres' background
/// processes when they did nothing) spent nothing in it.
pub fn cpu_spreads<'a>(
    runs: impl IntoIterator<Item = &'a BTreeMap<String, f64>> + Clone,
) -> BTreeMap<String, Spread> {
    services(runs.clone())
        .into_iter()
        .filter_map(|service| {
            let spread = Spread::of(
                runs.clone()
                    .into_iter()
                    .map(|run| run.get(service).copied().unwrap_or(0.0)),
            )?;
            Some((service.clone(), spread))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_odd_count_is_the_middle_value() {
        let spread = Spread::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            spread,
            Spread {
                min: 1.0,
                median: 2.0,
                max: 3.0
            }
        );
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let spread = Spread::of([4.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!(spread.median, 3.0);
        assert_eq!((spread.min, spread.max), (1.0, 10.0));
    }

    #[test]
    fn no_runs_have_no_spread() {
        assert_eq!(Spread::of([]), None);
    }

    #[test]
    fn a_target_is_judged_on_the_median_in_its_direction() {
        let spread = Spread::of([20.0, 26.0, 30.0]).unwrap();
        assert!(!TargetCheck::judge("cpu", Bound::AtMost, 25.0, spread).met);
        assert!(TargetCheck::judge("cpu", Bound::AtMost, 26.0, spread).met);
        assert!(TargetCheck::judge("ratio", Bound::AtLeast, 26.0, spread).met);
        assert!(!TargetCheck::judge("ratio", Bound::AtLeast, 26.5, spread).met);
    }

    #[test]
    fn a_service_absent_from_a_run_spent_nothing_in_it() {
        let first = BTreeMap::from([("postgres".to_owned(), 1.0), ("idle".to_owned(), 0.5)]);
        let second = BTreeMap::from([("postgres".to_owned(), 3.0)]);
        let spreads = cpu_spreads([&first, &second]);
        assert_eq!(spreads["postgres"].median, 2.0);
        assert_eq!(
            spreads["idle"],
            Spread {
                min: 0.0,
                median: 0.25,
                max: 0.5
            }
        );
    }
}
