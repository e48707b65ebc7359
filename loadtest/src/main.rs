//! `loadtest <profile> --host ws://HOST/ws [options] [-- goose options]`:
//! see `loadtest --help` and loadtest/README.md.

use clap::Parser;
use loadtest::{Options, console_report, run};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let opts = Options::parse();
    if opts.goose.iter().any(|a| a == "--help" || a == "-h") {
        print!("{}", loadtest::goose_help());
        return ExitCode::SUCCESS;
    }
    match run(opts).await {
        Ok(summary) => {
            print!("{}", console_report(&summary));
            if summary.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::from(2)
        }
    }
}
