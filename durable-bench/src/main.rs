//! `durable-bench`: measures `durable` on each backend (`memory`, `sqlx`, `native`) against
//! PostgreSQL's own one-row INSERT commit rate on the same server, in one run.
//!
//! ```text
//! cargo run --release -p durable-bench -- [--quick] [--json] [--database-url URL]
//!     [--backends memory,sqlx,native] [--only GROUPS] [--long-run TASKS]
//!     [--chart FILE.svg] [--markdown FILE.md]
//! ```
//!
//! Without `--database-url`, the server comes from the fixture of `durable-testing` (the
//! server of `DURABLE_TEST_DATABASE_URL`, else a Docker container of
//! `DURABLE_TEST_POSTGRES_IMAGE`, else a local cluster), started with PostgreSQL's default
//! durability (`fsync` and `synchronous_commit` on). See `docs/benchmarks.md`.

mod backends;
mod load;
mod procs;
mod report;
mod scenarios;
mod server;
mod tasks;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use durable_testing::MemoryStore;

use crate::backends::{MemoryMaker, NativeMaker, SqlxMaker};
use crate::report::Measurement;
use crate::scenarios::{References, Sizes};
use crate::server::Pg;

const USAGE: &str = "usage: durable-bench [--quick] [--json] [--database-url URL]
    [--backends memory,sqlx,native] [--only GROUPS] [--long-run TASKS]
    [--chart FILE.svg] [--markdown FILE.md] [--render FILE.jsonl]

  --quick          about a tenth of the full size (for CI)
  --json           one JSON object per line on stdout:
                   {\"scenario\", \"backend\", \"value\", \"unit\", \"reference\"}
  --database-url   use this server (a user allowed to CREATE DATABASE) instead of starting one
  --backends       which backends to measure (default: all three)
  --only           which groups to run (default: all): reference, spawn, latency, steps,
                   wakeups, burn, long
  --long-run       tasks of the long run (default 1,000,000; --quick 20,000)
  --chart          write an SVG chart of throughput and latencies
  --markdown       write the table in Markdown
  --render         measure nothing: read the JSON lines of an earlier --json run and print
                   the table (and write --chart, --markdown) from them";

/// The groups of scenarios `--only` selects from.
const GROUPS: [&str; 7] = [
    "reference",
    "spawn",
    "latency",
    "steps",
    "wakeups",
    "burn",
    "long",
];

#[derive(Debug, Default)]
struct Options {
    quick: bool,
    json: bool,
    database_url: Option<String>,
    backends: Vec<String>,
    only: Vec<String>,
    long_run: Option<usize>,
    chart: Option<PathBuf>,
    markdown: Option<PathBuf>,
    render: Option<PathBuf>,
}

impl Options {
    fn parse(args: &[String]) -> anyhow::Result<Option<Options>> {
        let mut options = Options {
            backends: vec!["memory".into(), "sqlx".into(), "native".into()],
            only: GROUPS.iter().map(|g| (*g).to_owned()).collect(),
            ..Options::default()
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .cloned()
                    .with_context(|| format!("{arg} needs a value"))
            };
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--json" => options.json = true,
                "--database-url" => options.database_url = Some(value()?),
                "--backends" => options.backends = list(&value()?),
                "--only" => options.only = list(&value()?),
                "--long-run" => options.long_run = Some(value()?.replace(['_', ','], "").parse()?),
                "--chart" => options.chart = Some(PathBuf::from(value()?)),
                "--markdown" => options.markdown = Some(PathBuf::from(value()?)),
                "--render" => options.render = Some(PathBuf::from(value()?)),
                "-h" | "--help" => return Ok(None),
                other => bail!("unknown option {other}\n{USAGE}"),
            }
        }
        for backend in &options.backends {
            if !["memory", "sqlx", "native"].contains(&backend.as_str()) {
                bail!("unknown backend {backend}");
            }
        }
        for group in &options.only {
            if !GROUPS.contains(&group.as_str()) {
                bail!("unknown group {group}; groups are {}", GROUPS.join(", "));
            }
        }
        Ok(Some(options))
    }

    fn runs(&self, group: &str) -> bool {
        self.only.iter().any(|g| g == group)
    }

    fn measures(&self, backend: &str) -> bool {
        self.backends.iter().any(|b| b == backend)
    }
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.first().map(String::as_str) == Some("__worker") {
        return runtime.block_on(procs::worker_main(&args[1..]));
    }
    let Some(options) = Options::parse(&args)? else {
        println!("{USAGE}");
        return Ok(());
    };
    runtime.block_on(run(options))
}

/// Prints a line of context: on stdout for the table, on stderr beside JSON.
fn info(options: &Options, line: &str) {
    if options.json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

fn processes_label(processes: usize) -> String {
    if processes == 1 {
        "1_process".to_owned()
    } else {
        format!("{processes}_processes")
    }
}

async fn run(options: Options) -> anyhow::Result<()> {
    if let Some(path) = &options.render {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let out = text
            .lines()
            .filter(|line| line.starts_with('{'))
            .map(serde_json::from_str)
            .collect::<Result<Vec<Measurement>, _>>()
            .with_context(|| format!("reading the measurements of {}", path.display()))?;
        print!("{}", report::table(&out));
        return write_files(&options, &out);
    }
    let started = Instant::now();
    let mut sizes = if options.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if let Some(long_run) = options.long_run {
        sizes.long_run = long_run;
    }
    info(&options, &format!("machine: {}", server::machine()));
    info(
        &options,
        &format!("load average at start: {}", server::load_average()),
    );
    let mut out: Vec<Measurement> = Vec::new();
    let mut refs = References::default();
    let needs_pg =
        options.measures("sqlx") || options.measures("native") || options.runs("reference");
    let pg = if needs_pg {
        Some(Pg::start(options.database_url.clone()).await?)
    } else {
        None
    };
    if let Some(pg) = &pg {
        let db = pg.database().await?;
        info(&options, &format!("PostgreSQL: {}", pg.description));
        let settings = pg.settings(db.url()).await?;
        let settings: Vec<String> = settings
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        info(&options, &format!("settings: {}", settings.join(" ")));
        if pg.cpu_seconds().is_none() {
            info(
                &options,
                "database CPU: not visible from here (not measured)",
            );
        }
        if options.runs("reference") {
            let duration = Duration::from_millis(if options.quick { 500 } else { 3000 });
            let counts: &[usize] = if options.quick {
                &[1, 8, 32]
            } else {
                &[1, 8, 16, 32]
            };
            for &clients in counts {
                let rate = load::insert_rate(db.url(), clients, duration).await?;
                let scenario = if clients == 1 {
                    "insert_1_client".to_owned()
                } else {
                    format!("insert_{clients}_clients")
                };
                out.push(Measurement::new(&scenario, "postgres", rate, "tx/s"));
                match clients {
                    1 => refs.insert_1 = Some(rate),
                    8 => refs.insert_8 = Some(rate),
                    16 => refs.insert_16 = Some(rate),
                    _ => refs.insert_32 = Some(rate),
                }
            }
        }
        db.drop_now().await?;
    }
    let process_counts: &[usize] = if options.quick { &[1, 4] } else { &[1, 2, 4] };
    // A full run repeats each burn-down and reports the median run.
    let repeats = if options.quick { 1 } else { 3 };
    let reference_for = |processes: usize| match processes {
        1 => refs.insert_8,
        2 => refs.insert_16,
        _ => refs.insert_32,
    };
    if options.measures("memory") {
        let maker = MemoryMaker(MemoryStore::with_system_clock());
        in_process(&options, &maker, &sizes, &refs, &mut out).await?;
        if options.runs("steps") {
            scenarios::memory_steps(sizes.memory_step_tasks, &mut out).await?;
        }
        if options.runs("burn") {
            for &processes in process_counts {
                let burn = load::burn_down_memory(sizes.burn_down, processes).await?;
                out.push(Measurement::new(
                    &format!("burn_down_{}", processes_label(processes)),
                    "memory",
                    burn.tasks_per_second,
                    "tasks/s",
                ));
            }
        }
    }
    for backend in ["sqlx", "native"] {
        if !options.measures(backend) {
            continue;
        }
        let Some(pg) = &pg else { continue };
        let db = pg.database().await?;
        let url = db.url().to_owned();
        if backend == "sqlx" {
            in_process(
                &options,
                &SqlxMaker { url, pool: 10 },
                &sizes,
                &refs,
                &mut out,
            )
            .await?;
        } else {
            in_process(
                &options,
                &NativeMaker { url, pool: 10 },
                &sizes,
                &refs,
                &mut out,
            )
            .await?;
        }
        db.drop_now().await?;
        if options.runs("burn") {
            for &processes in process_counts {
                let burn =
                    load::burn_down_pg_median(pg, backend, sizes.burn_down, processes, repeats)
                        .await?;
                let label = processes_label(processes);
                out.push(
                    Measurement::new(
                        &format!("burn_down_{label}"),
                        backend,
                        burn.tasks_per_second,
                        "tasks/s",
                    )
                    .with_reference(reference_for(processes)),
                );
                if let Some(cpu) = burn.db_cpu_per_1000 {
                    out.push(Measurement::new(
                        &format!("db_cpu_per_1000_{label}"),
                        backend,
                        cpu,
                        "s",
                    ));
                }
                if let Some(cpu) = burn.worker_cpu_per_1000 {
                    out.push(Measurement::new(
                        &format!("worker_cpu_per_1000_{label}"),
                        backend,
                        cpu,
                        "s",
                    ));
                }
            }
        }
        if options.runs("long") {
            load::long_run(pg, backend, sizes.long_run, &mut out).await?;
        }
    }
    if options.json {
        for m in &out {
            println!("{}", m.json_line());
        }
    } else {
        println!();
        print!("{}", report::table(&out));
        println!();
    }
    info(
        &options,
        &format!("load average at end: {}", server::load_average()),
    );
    info(
        &options,
        &format!("total time: {:.1} s", started.elapsed().as_secs_f64()),
    );
    write_files(&options, &out)
}

/// Writes the chart and the Markdown table, if asked.
fn write_files(options: &Options, out: &[Measurement]) -> anyhow::Result<()> {
    if let Some(path) = &options.chart {
        let title = format!(
            "durable-bench{}: {}",
            if options.quick { " --quick" } else { "" },
            server::machine()
        );
        std::fs::write(path, report::svg(out, &title))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &options.markdown {
        std::fs::write(path, report::markdown(out))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn in_process<M: backends::Maker>(
    options: &Options,
    maker: &M,
    sizes: &Sizes,
    refs: &References,
    out: &mut Vec<Measurement>,
) -> anyhow::Result<()> {
    scenarios::run_selected(maker, sizes, refs, &options.only, out).await
}
