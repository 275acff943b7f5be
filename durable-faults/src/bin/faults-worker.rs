//! The worker process of the fault-injection suite: configured by `FAULTS_*` environment
//! variables (see `durable_faults::backend::env`), started, killed, paused and stopped by the
//! scenarios in `tests/faults.rs`.

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("faults-worker: no runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(durable_faults::backend::worker_main()) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            eprintln!("faults-worker: {error:#}");
            ExitCode::from(2)
        }
    }
}
