//! The `crank` command: train, resume, evaluate, predict, inspect and convert, from a model file.

mod config;
mod evaluate;
mod files;
mod inspect;
mod prepare;
mod report;
mod train;

use clap::{Parser, Subcommand};
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

/// The subcommands; each one's help is its arguments' doc comment.
#[derive(Subcommand)]
enum Command {
    Train(train::TrainArgs),
    Resume(train::ResumeArgs),
    Evaluate(evaluate::EvaluateArgs),
    Predict(evaluate::PredictArgs),
    Inspect(inspect::InspectArgs),
    Convert(inspect::ConvertArgs),
}

/// A command's failure: one line for standard error.
type Result<T> = std::result::Result<T, String>;

/// A library error as the command's one line.
fn ctx<T>(r: crank::Result<T>) -> Result<T> {
    r.map_err(|e| e.to_string())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => train::train(args),
        Command::Resume(args) => train::resume(args),
        Command::Evaluate(args) => evaluate::evaluate(args),
        Command::Predict(args) => evaluate::predict(args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Convert(args) => inspect::convert(args),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
