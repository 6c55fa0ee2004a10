//! `labelport-bench scale`: files-mode syncs of storages of 10,000 …
//! 10,000,000 objects (a computed listing, [`GeneratedBucket`]) on SQLite
//! and PostgreSQL, each beside the raw insert ceiling of the same number of
//! task and link rows measured in the same run (issue 18, item 5). Every
//! measurement starts from a fresh database. Prints a table and draws the
//! plot of tasks/s against storage size as a PNG. Asserts nothing.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::setup::FreshDb;
use crate::sync::{files_mode_row, fresh_raw_insert_rate, run_engine, setup, GeneratedBucket};

#[derive(clap::Args)]
pub struct BenchScaleArgs {
    /// Storage sizes in objects, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![10_000, 100_000, 1_000_000, 10_000_000])]
    sizes: Vec<usize>,
    /// A PostgreSQL server (`postgres://user@host:port/db`) whose user may
    /// create databases: each measurement runs in a database of its own,
    /// created and dropped by the bench. Without it, SQLite alone.
    #[arg(long)]
    postgres_url: Option<String>,
    /// The PNG to draw.
    #[arg(long, default_value = "docs/benchmarks-scale.png")]
    plot: PathBuf,
    /// A TrueType font for the plot's text (default: DejaVu Sans or
    /// Liberation Sans under /usr/share/fonts).
    #[arg(long)]
    font: Option<PathBuf>,
}

/// One size on one backend: tasks per second of the sync and of the raw
/// insert ceiling.
struct Point {
    backend: &'static str,
    size: usize,
    sync: f64,
    ceiling: f64,
}

const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

pub async fn run(args: BenchScaleArgs) -> anyhow::Result<()> {
    // The font is read first: a run of many minutes should not end without its plot.
    let font_path = match &args.font {
        Some(path) => path.clone(),
        None => FONTS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context("no font for the plot: pass --font FILE.ttf or install fonts-dejavu-core")?,
    };
    let font: &'static [u8] = Box::leak(
        std::fs::read(&font_path)
            .with_context(|| format!("reading {}", font_path.display()))?
            .into_boxed_slice(),
    );
    let mut backends = vec!["sqlite"];
    if args.postgres_url.is_some() {
        backends.push("postgres");
    }
    let mut points = Vec::new();
    for backend in backends {
        for &size in &args.sizes {
            println!("== {backend}, {size} objects");
            // Each database is dropped whatever the measurement answered.
            let postgres_url = args.postgres_url.as_deref().filter(|_| backend == "postgres");
            let what = format!("scale_ceiling_{size}");
            let ceiling = fresh_raw_insert_rate(postgres_url, &what, size, &files_mode_row, true).await?;
            let fresh = FreshDb::open(postgres_url, &format!("scale_sync_{size}")).await?;
            let measured = async {
                let settings = setup(&fresh.db, "bench", true).await?;
                let (report, secs) = run_engine(&fresh.db, &GeneratedBucket { count: size }, &settings).await?;
                anyhow::ensure!(
                    report.tasks_created as usize == size,
                    "the sync made {} tasks of {size}",
                    report.tasks_created
                );
                anyhow::Ok(secs)
            }
            .await;
            fresh.close().await?;
            let secs = measured?;
            let sync = size as f64 / secs;
            println!(
                "files-mode sync: {size} tasks in {secs:.3} s = {sync:.0} tasks/s; sync / ceiling = {:.2}",
                sync / ceiling
            );
            points.push(Point {
                backend,
                size,
                sync,
                ceiling,
            });
        }
    }
    println!();
    println!("| backend | objects | raw insert ceiling (tasks/s) | files-mode sync (tasks/s) | sync / ceiling |");
    println!("|---|---|---|---|---|");
    for p in &points {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} |",
            p.backend,
            p.size,
            p.ceiling,
            p.sync,
            p.sync / p.ceiling
        );
    }
    draw(&points, &args.plot, font)?;
    println!("plot: {} (font {})", args.plot.display(), font_path.display());
    Ok(())
}

/// Tasks/s (linear) against objects (log scale): per backend, the sync as
/// a solid line with dots and the ceiling as a dashed line.
fn draw(points: &[Point], path: &Path, font: &'static [u8]) -> anyhow::Result<()> {
    use plotters::prelude::*;
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("the plot's font is not a TrueType font"))?;
    let plot_err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing {}: {e}", path.display());
    let root = BitMapBackend::new(path, (1100, 680)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let min_x = points.iter().map(|p| p.size).min().unwrap_or(1) as f64;
    let max_x = points.iter().map(|p| p.size).max().unwrap_or(10) as f64;
    let max_y = points.iter().map(|p| p.sync.max(p.ceiling)).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Files-mode sync against the raw insert ceiling, by storage size",
            ("sans-serif", 26),
        )
        .margin(24)
        .x_label_area_size(56)
        .y_label_area_size(90)
        .build_cartesian_2d((min_x * 0.7..max_x * 1.4).log_scale(), 0.0..max_y)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("objects in the storage (log scale)")
        .y_desc("tasks per second")
        .x_label_formatter(&|x| count_label(*x))
        .y_label_formatter(&|y| format!("{:.0}k", y / 1000.0))
        .label_style(("sans-serif", 18))
        .axis_desc_style(("sans-serif", 20))
        .draw()
        .map_err(plot_err)?;
    for (backend, name, color) in [("sqlite", "SQLite", BLUE), ("postgres", "PostgreSQL", RED)] {
        let line = |f: fn(&Point) -> f64| -> Vec<(f64, f64)> {
            points
                .iter()
                .filter(|p| p.backend == backend)
                .map(|p| (p.size as f64, f(p)))
                .collect()
        };
        let sync = line(|p| p.sync);
        if sync.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(sync.clone(), color.stroke_width(3)))
            .map_err(plot_err)?
            .label(format!("{name}: sync"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
        chart
            .draw_series(sync.iter().map(|&xy| Circle::new(xy, 5, color.filled())))
            .map_err(plot_err)?;
        chart
            .draw_series(DashedLineSeries::new(line(|p| p.ceiling), 10, 7, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(format!("{name}: raw insert ceiling"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.mix(0.5).stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 18))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// 10000 → "10k", 10000000 → "10M".
fn count_label(x: f64) -> String {
    if x >= 1e6 {
        format!("{}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{}k", x / 1e3)
    } else {
        format!("{x}")
    }
}
