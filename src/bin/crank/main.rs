//! The `crank` command: train, resume, evaluate, predict, inspect, convert and quantize, from a
//! model file.

mod config;
mod evaluate;
mod files;
mod inspect;
mod job;
mod prepare;
mod quantize;
mod report;
mod train;

use clap::{Parser, Subcommand};
use crank::collective::Communicator;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "crank",
    version,
    about = "Train, evaluate and ship dense neural networks on the CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The threads the command asks for (`--threads`), if it takes them.
    fn threads(&self) -> Option<usize> {
        match &self.command {
            Command::Train(args) => args.run.overrides.threads,
            Command::Resume(args) => args.run.overrides.threads,
            _ => None,
        }
    }
}

/// The subcommands; each one's help is its arguments' doc comment.
#[derive(Subcommand)]
enum Command {
    Train(train::TrainArgs),
    Resume(train::ResumeArgs),
    Evaluate(evaluate::EvaluateArgs),
    Predict(evaluate::PredictArgs),
    Inspect(inspect::InspectArgs),
    Convert(inspect::ConvertArgs),
    Quantize(quantize::QuantizeArgs),
}

/// A command's failure: one line for standard error.
type Result<T> = std::result::Result<T, String>;

/// A library error as the command's one line ([`job::ELSEWHERE`] when another rank of a
/// data-parallel run failed and says why itself).
fn ctx<T>(r: crank::Result<T>) -> Result<T> {
    r.map_err(|e| match e {
        crank::Error::Rank { .. } => job::ELSEWHERE.to_string(),
        e => e.to_string(),
    })
}

fn run(cli: Cli, comm: &dyn Communicator) -> Result<()> {
    match cli.command {
        Command::Train(args) => train::train(args, comm),
        Command::Resume(args) => train::resume(args, comm),
        Command::Evaluate(args) => evaluate::evaluate(args),
        Command::Predict(args) => evaluate::predict(args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Convert(args) => inspect::convert(args),
        Command::Quantize(args) => quantize::quantize(args),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    // This thread makes every call, so it is one of the pool's threads: a call that forks then
    // starts here instead of handing its work to the pool and waiting.
    if let Err(e) = crank::set_threads_here(cli.threads()) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let comm = match job::start() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(cli, comm.as_ref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e == job::ELSEWHERE => ExitCode::FAILURE,
        Err(e) if comm.size() > 1 => {
            eprintln!("error: rank {} of {}: {e}", comm.rank(), comm.size());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
