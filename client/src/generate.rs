//! `etlctl generate` and `etlctl upload`: synthetic catalogs for demos and benchmarks.

use std::{io::Write, path::PathBuf, process::ExitCode};

use activities::{config::Config, s3::ObjectStore};
use anyhow::Context;
use clap::Args;
use generator::{GeneratorConfig, NEXT_DAY, write_catalog};

use crate::start::parse_object_uri;

#[derive(Args)]
pub struct GenerateArgs {
    #[arg(long, default_value_t = 1000)]
    rows: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Invalid rows per thousand.
    #[arg(long, default_value_t = 10)]
    invalid_per_mille: u32,
    /// Rows per thousand that repeat an earlier sku.
    #[arg(long, default_value_t = 20)]
    duplicate_per_mille: u32,
    #[arg(long)]
    crlf: bool,
    #[arg(long)]
    bom: bool,
    /// Write to this file (default: stdout), or upload with `--upload`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Upload to `s3://bucket/key` instead of writing a file.
    #[arg(long)]
    pub upload: Option<String>,
    /// Write the next day's snapshot of the catalog `--seed` describes: about 3% of the items
    /// changed, 1% gone, 1% new.
    #[arg(long)]
    next_day: bool,
    /// Print the generator's expected counts as JSON on stderr.
    #[arg(long)]
    stats: bool,
}

pub async fn generate(config: &Config, args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let generator = GeneratorConfig {
        rows: args.rows,
        seed: args.seed,
        invalid_per_mille: args.invalid_per_mille,
        duplicate_per_mille: args.duplicate_per_mille,
        crlf: args.crlf,
        bom: args.bom,
        next_day: args.next_day.then_some(NEXT_DAY),
        ..GeneratorConfig::default()
    };
    let stats = match (&args.upload, &args.out) {
        (Some(uri), _) => {
            let (bucket, key) = parse_object_uri(uri)?;
            let mut body = Vec::new();
            let stats = write_catalog(&generator, &mut body)?;
            let s3 = ObjectStore::new(config)?;
            s3.ensure_bucket(&bucket).await?;
            s3.put(&bucket, &key, body.into()).await?;
            stats
        }
        (None, Some(path)) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut out = std::io::BufWriter::new(file);
            let stats = write_catalog(&generator, &mut out)?;
            out.flush()?;
            stats
        }
        (None, None) => write_catalog(&generator, std::io::stdout().lock())?,
    };
    if args.stats {
        eprintln!("{}", serde_json::to_string(&stats)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Uploads a local file to S3 (creating the bucket if needed) and prints its metadata.
pub async fn upload(config: &Config, file: &PathBuf, uri: &str) -> anyhow::Result<ExitCode> {
    let (bucket, key) = parse_object_uri(uri)?;
    let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let s3 = ObjectStore::new(config)?;
    s3.ensure_bucket(&bucket).await?;
    let meta = s3.put(&bucket, &key, body.into()).await?;
    println!("{}", serde_json::to_string(&meta)?);
    Ok(ExitCode::SUCCESS)
}
