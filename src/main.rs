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
    /// Editor: condition edge map to open with.
    #[arg(long)]
    condition: Option<std::path::PathBuf>,
    /// Editor: exemplar image to open with.
    #[arg(long)]
    exemplar: Option<std::path::PathBuf>,
    /// Editor: model folder or checkpoint (default: the shipped `weights/`).
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// Editor: start a run as soon as the model is loaded.
    #[arg(long)]
    run: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Translate a condition (edge map) into an image in the style of an exemplar.
    Translate(midm::cli::TranslateArgs),
    /// Time every stage of a translation (shipped model, and/or the official size with random weights).
    Bench(BenchArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Model folder or checkpoint (default: the shipped model).
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// Also time the official CelebA-HQ size (random weights; slow on a CPU).
    #[arg(long)]
    official: bool,
    /// Only the official size.
    #[arg(long)]
    official_only: bool,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn run_bench(args: &BenchArgs) -> anyhow::Result<()> {
    let device = midm::cli::parse_device(&args.device)?.to_device()?;
    println!("device: {:?}, rayon threads: {}", device, rayon_threads());
    if !args.official_only {
        let path = args
            .model
            .clone()
            .unwrap_or_else(midm::cli::default_model_path);
        let model = midm::load_model(&path, &device)?;
        let t = midm::bench::bench_model(&model, args.warmup, args.runs)?;
        midm::bench::print_table(
            &format!(
                "model {} ({}x{})",
                path.display(),
                model.config.image_size,
                model.config.image_size
            ),
            &t,
        );
    }
    if args.official || args.official_only {
        let model = midm::bench::random_model(&midm::bench::official_config(), &device)?;
        let t = midm::bench::bench_model(&model, args.warmup.min(1), args.runs.min(3))?;
        midm::bench::print_table(
            "official CelebA-HQ size, random weights (256x256, latent 64x64)",
            &t,
        );
    }
    Ok(())
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        format!(
            "{} (all cores)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        )
    })
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Translate(args)) => midm::cli::run_translate(&args),
        Some(Command::Bench(args)) => run_bench(&args),
        None => midm::ui::run_app(midm::ui::AppArgs {
            model: cli.model,
            condition: cli.condition,
            exemplar: cli.exemplar,
            run: cli.run,
            fresh: false,
        }),
    }
}
