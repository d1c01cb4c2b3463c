//! `midm`: the editor (no subcommand) and the headless commands.
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "midm",
    version,
    about = "Exemplar-based image translation with MIDMs"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Translate a condition (edge map) into an image in the style of an exemplar.
    Translate(midm::cli::TranslateArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Translate(args)) => midm::cli::run_translate(&args),
        None => anyhow::bail!("the editor is not built yet; use `midm translate --help`"),
    }
}
