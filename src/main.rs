use std::path::PathBuf;

use clap::Parser;

/// midm: exemplar-based image translation (MIDMs). Without arguments it opens the editor.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Condition edge map to open the editor with.
    #[arg(long)]
    condition: Option<PathBuf>,
    /// Exemplar image to open the editor with.
    #[arg(long)]
    exemplar: Option<PathBuf>,
    /// Model folder or checkpoint (default: the shipped `weights/`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Start a run as soon as the model is loaded.
    #[arg(long)]
    run: bool,
}

fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let cli = Cli::parse();
    midm::ui::run_app(midm::ui::AppArgs {
        model: cli.model,
        condition: cli.condition,
        exemplar: cli.exemplar,
        run: cli.run,
        fresh: false,
    })
}
