//! `midm`: the editor (no subcommand) and the headless commands.
use clap::{Parser, Subcommand};

/// mimalloc, told never to return freed memory to the OS (see `main`): every op allocates its
/// output afresh, and at the official size those are 4-67 MB blocks. glibc's malloc (and
/// mimalloc's default 10 ms purge) handed them back and page-faulted them in again, zeroed, on
/// the next op: the kernel's clear_page was 22 % of an official-size stage run in `perf`.
/// `midm batch --low-memory` allocates from glibc's malloc instead ([`midm::alloc`]).
#[global_allocator]
static GLOBAL: midm::alloc::Allocator = midm::alloc::Allocator;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (libmimalloc-sys names no constant for
/// it; `mi_option_use_numa_nodes`, which it does name, is 16).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

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
    /// Translate many pairs (a CSV / JSON Lines manifest, or a --grid) with one model load,
    /// B pairs per sampler call; resumable, shardable across machines (--shard i/N).
    Batch(midm::cli::BatchArgs),
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
    /// Number format of the UNet and autoencoder (matching always runs in f32).
    #[arg(long, value_enum, default_value_t = midm::model::Precision::F32)]
    precision: midm::model::Precision,
    /// Time the stages only; estimate the whole translation as the sum of its stages (the
    /// default for the official size, where one translation is ~6 TFLOP).
    #[arg(long)]
    stages_only: bool,
    /// Time whole translations at the official size too (minutes on a CPU).
    #[arg(long)]
    official_whole: bool,
    /// Print the analytical FLOPs of each stage only (no timing).
    #[arg(long)]
    flops_only: bool,
    /// Print the timings as JSON.
    #[arg(long)]
    json: bool,
    /// Batch sizes to compare, e.g. 1,8: whole translations of B random pairs per sampler call
    /// (each pair with its own seed) and every stage, per image, side by side (shipped model).
    #[arg(long, value_delimiter = ',')]
    batch: Vec<usize>,
    /// Time runs through the editor's worker, without a window: Run -> first streamed step,
    /// Run -> final image, and a run cancelled half way then run again (the cat pair of
    /// assets/, the editor's default parameters and sampler threads).
    #[arg(long, conflicts_with_all = ["batch", "official", "official_only", "compare_torch"])]
    worker: bool,
    /// With --batch: concurrent sub-batches per batch, as `midm batch --workers` (default: one
    /// per thread).
    #[arg(long)]
    workers: Option<usize>,
    /// Also time the same stages in PyTorch on the same weights (`python -m train.bench_torch`,
    /// run from --torch-dir) and print candle/PyTorch ratios. With --official the random
    /// official-size model is built by PyTorch and exported, so both load the same file.
    #[arg(long)]
    compare_torch: bool,
    /// Python interpreter for --compare-torch.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Folder holding the `train` package (default: the source tree of this binary).
    #[arg(long)]
    torch_dir: Option<std::path::PathBuf>,
}

fn run_bench(args: &BenchArgs) -> anyhow::Result<()> {
    let device = midm::cli::parse_device(&args.device)?.to_device()?;
    if cfg!(debug_assertions) {
        // The dev profile builds midm itself at opt-level 1 (its conv and activation kernels are
        // far slower there); earlier numbers taken that way misled us about the CPU gap.
        eprintln!("warning: this is a debug build; for timings run `cargo run --release -- bench`");
    }
    if !args.json {
        println!(
            "device: {:?}, threads: {}, precision: {}",
            device,
            rayon_threads(),
            args.precision
        );
    }
    let mut report = serde_json::Map::new();
    if !args.batch.is_empty() {
        return bench_batches(args, &device);
    }
    if args.worker {
        return bench_worker(args);
    }
    if !args.official_only {
        let path = args
            .model
            .clone()
            .unwrap_or_else(midm::params::default_model_path);
        let torch = if args.compare_torch {
            let p = path.to_string_lossy().to_string();
            Some(run_torch(args, &["--weights", &p])?)
        } else {
            None
        };
        let model = midm::checkpoint::load_model_with(&path, &device, args.precision)?;
        let title = format!(
            "model {} ({}x{})",
            path.display(),
            model.config.image_size,
            model.config.image_size
        );
        let whole = !args.stages_only;
        bench_one(
            args,
            &model,
            &title,
            (args.warmup, args.runs, whole),
            torch,
            &mut report,
        )?;
    }
    if args.official || args.official_only {
        let title = "official CelebA-HQ size, random weights (256x256, latent 64x64)";
        let (warmup, runs) = (args.warmup.min(1), args.runs.min(3));
        let whole = args.official_whole && !args.stages_only;
        let mut extra = vec!["--official"];
        if !whole {
            extra.push("--stages-only");
        }
        if args.compare_torch {
            // PyTorch draws the weights and exports them; candle loads that same file.
            let dir = std::env::temp_dir().join(format!("midm-official-{}", std::process::id()));
            let d = dir.to_string_lossy().to_string();
            extra.extend(["--export", &d]);
            let torch = run_torch_runs(args, &extra, warmup, runs);
            let result = torch.and_then(|torch| {
                let model = midm::checkpoint::load_model_with(&dir, &device, args.precision)?;
                bench_one(
                    args,
                    &model,
                    title,
                    (warmup, runs, whole),
                    Some(torch),
                    &mut report,
                )
            });
            let _ = std::fs::remove_dir_all(&dir);
            result?;
        } else {
            let model = midm::bench::random_model(
                &midm::bench::official_config(),
                &device,
                args.precision,
            )?;
            bench_one(
                args,
                &model,
                title,
                (warmup, runs, whole),
                None,
                &mut report,
            )?;
        }
    }
    if args.json {
        println!("{}", serde_json::Value::Object(report));
    }
    Ok(())
}

/// `midm bench --worker`: the editor's path without its window.
fn bench_worker(args: &BenchArgs) -> anyhow::Result<()> {
    use midm::worker::{LabelInput, RunRequest};
    let choice = midm::cli::parse_device(&args.device)?;
    let path = args
        .model
        .clone()
        .unwrap_or_else(midm::params::default_model_path);
    let model = midm::checkpoint::load_model_with(&path, &choice.to_device()?, args.precision)?;
    let size = model.config.image_size as u32;
    let assets = midm::params::asset_dirs()
        .into_iter()
        .find(|d| d.join("cat_sketch.png").is_file())
        .ok_or_else(|| {
            anyhow::anyhow!("assets/cat_sketch.png not found here or in the source tree")
        })?;
    let open = |name: &str| {
        let p = assets.join(name);
        image::open(&p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))
    };
    let params = midm::params::Params::default();
    let request = RunRequest {
        condition: LabelInput::Layers {
            edges: midm::image::edge_map(&open("cat_sketch.png")?, size),
            parts: midm::image::empty_parts(size),
        },
        exemplar: open("cat_exemplar.png")?.to_rgba8(),
        exemplar_label: LabelInput::ExemplarEdges {
            canny: params.canny,
            traced: image::GrayImage::new(size, size),
            parts: midm::image::empty_parts(size),
        },
        options: params.sampler_options(),
        seed: params.seed,
    };
    let b =
        midm::bench::worker::bench_worker(model, &path, choice, &request, args.warmup, args.runs)?;
    b.print(choice, args.warmup);
    Ok(())
}

/// `midm bench --batch 1,8`: images per second at each batch size, in one process (the same
/// warm caches and thread pool for every size).
fn bench_batches(args: &BenchArgs, device: &candle_core::Device) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.batch.iter().all(|&b| b >= 1),
        "batch sizes must be at least 1"
    );
    let path = args
        .model
        .clone()
        .unwrap_or_else(midm::params::default_model_path);
    let model = midm::checkpoint::load_model_with(&path, device, args.precision)?;
    let workers = args.workers.unwrap_or_else(rayon::current_num_threads);
    println!("whole translations in {workers} concurrent sub-batches (at most one per pair)");
    let results = midm::bench::bench_batches(&model, &args.batch, workers, args.warmup, args.runs)?;
    let title = format!(
        "model {} ({}x{})",
        path.display(),
        model.config.image_size,
        model.config.image_size
    );
    if args.json {
        let m: serde_json::Map<String, serde_json::Value> = results
            .iter()
            .map(|(b, t)| (format!("batch_{b}"), midm::bench::to_json(t)))
            .collect();
        println!("{}", serde_json::Value::Object(m));
    } else {
        midm::bench::print_batches(&title, &results);
    }
    Ok(())
}

/// Bench (or count) one model and print or collect the result.
fn bench_one(
    args: &BenchArgs,
    model: &midm::MidmModel,
    title: &str,
    (warmup, runs, whole): (usize, usize, bool),
    torch: Option<serde_json::Value>,
    report: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    if args.flops_only {
        midm::bench::print_flops(title, &model.config);
        return Ok(());
    }
    let t = midm::bench::bench_model(model, warmup, runs, whole)?;
    let mut entry = serde_json::json!({ "candle": midm::bench::to_json(&t) });
    match &torch {
        Some(torch) if !args.json => midm::bench::print_comparison(title, &t, torch),
        _ if !args.json => midm::bench::print_table(title, &t),
        _ => {}
    }
    if let Some(torch) = torch {
        entry["torch"] = torch;
    }
    entry["peak_rss_mib"] =
        serde_json::json!(midm::bench::peak_memory_bytes().map(|b| b as f64 / (1024.0 * 1024.0)));
    report.insert(title.to_string(), entry);
    Ok(())
}

fn run_torch(args: &BenchArgs, extra: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut extra = extra.to_vec();
    if args.stages_only {
        extra.push("--stages-only");
    }
    run_torch_runs(args, &extra, args.warmup, args.runs)
}

/// Runs `python -m train.bench_torch ... --json` to completion (before candle starts, so the two
/// never share the CPU) and returns its JSON.
fn run_torch_runs(
    args: &BenchArgs,
    extra: &[&str],
    warmup: usize,
    runs: usize,
) -> anyhow::Result<serde_json::Value> {
    let dir = args
        .torch_dir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    if !args.json {
        println!(
            "running PyTorch: {} -m train.bench_torch {} (in {})",
            args.python,
            extra.join(" "),
            dir.display()
        );
    }
    let out = std::process::Command::new(&args.python)
        .current_dir(&dir)
        .args(["-m", "train.bench_torch", "--json"])
        .args(["--warmup", &warmup.to_string(), "--runs", &runs.to_string()])
        // The same device and number format as the candle side (PyTorch: autocast for f16/bf16).
        .args([
            "--device",
            &args.device,
            "--precision",
            args.precision.name(),
        ])
        .args(extra)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| anyhow::anyhow!("could not run {}: {e}", args.python))?;
    anyhow::ensure!(
        out.status.success(),
        "train.bench_torch failed ({}); see its output above",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow::anyhow!("train.bench_torch printed no JSON: {text}"))?;
    Ok(serde_json::from_str(line)?)
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        format!(
            "{} (all cores)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        )
    })
}

/// candle's own element-wise pool off (CANDLE_NUM_THREADS=1 unless set): its ops run on the
/// calling thread, and rayon (the convolutions, matmuls and fused kernels: nearly all the work)
/// keeps every core. candle hands each element-wise op to a process-wide pool of its own, whose
/// threads spin between ops beside rayon's. Measured on a 2-core AMD EPYC, 2026-11-30/12-01:
/// - `midm bench`, model v1, six alternating pairs: whole translation 866-900 ms with the pool
///   off, 869-1161 ms (median 1088) with it on both cores;
/// - official size, stage sums in two alternating pairs: 45.4 / 34.5 s off, 46.6 / 33.3 s on
///   (no difference);
/// - the editor under Xvfb, five runs each: 1221-1572 ms to the final image with the pool on
///   one core, 1545-1924 ms with it on both;
/// - concurrent sub-batches (`midm batch`): 2.0-2.3 CPU-s per image off, 2.75 on, the workers
///   queueing behind the pool's lock.
///
/// Set before any tensor op: candle reads it once.
fn candle_threads() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// When mimalloc hands freed memory back to the OS. MIMALLOC_PURGE_DELAY (milliseconds,
/// mimalloc's own variable) overrides both choices. (`midm batch --low-memory` allocates from
/// glibc, where this does not matter.)
fn set_purge_delay(batch: bool) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // Single runs keep freed memory for reuse: measured on the official-size stage bench (1
    // thread) against a 10 ms delay, system time 8.8 -> 3.7 s, decode 14.4 -> 12.2 s, peak
    // memory 2.08 -> 2.23 GB. A batch instead hands back what stayed unused for a second
    // (mimalloc's default): kept forever, the retained memory grew over the first hundred pairs
    // (547 MB for 10 pairs, 725 MB for 100); with the delay 554 and 546 MB, at the same speed
    // (the sampler reuses its blocks within milliseconds).
    let delay_ms = if batch { 1000 } else { -1 };
    // SAFETY: sets a plain integer option before any other thread runs; mimalloc reads it at
    // each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay_ms) };
}

/// No transparent huge pages for this process (`MIMALLOC_ALLOW_THP=1` keeps them). mimalloc asks
/// for them on its arenas, and where the kernel grants them on request (`madvise`, a common
/// default) a block's partly used 2 MiB page is resident as a whole: the official-size weights
/// (1351 MiB of tensors) took 1456 MiB with them and 1357 MiB without, and the official stage
/// bench peaked at 2086 against 1977 MiB, at the same speed (whole translation 58.4 against
/// 59.9 s, one run each, 2 threads). A process-wide switch, because mimalloc reserves its first
/// arena before `main` runs, where its own option would come too late.
fn disallow_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some_and(|v| v != "0") {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: a plain prctl with integer arguments; it only sets a flag of this process's memory
    // map, read at each later page fault. Failure (an old kernel) leaves THP as it was.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> anyhow::Result<()> {
    disallow_transparent_huge_pages();
    // candle and gemm ask for the thread count on every matmul; without RAYON_NUM_THREADS candle
    // answers by parsing /proc/cpuinfo each time (seen in `perf`). Fix it once, before any thread
    // starts, to the cores this process may use.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    candle_threads();
    let cli = Cli::parse();
    let batch = match &cli.command {
        Some(Command::Batch(_)) => true,
        Some(Command::Bench(a)) => !a.batch.is_empty(),
        _ => false,
    };
    set_purge_delay(batch);
    // glibc's malloc for batches that ask for it (`--low-memory`; `MIDM_BATCH_ALLOCATOR=glibc`
    // also for `bench --batch`): a quarter less memory, a few per cent slower, so not the
    // default (docs/performance.md, "Batches").
    let low_memory = matches!(&cli.command, Some(Command::Batch(a)) if a.low_memory)
        || std::env::var_os("MIDM_BATCH_ALLOCATOR").is_some_and(|v| v == "glibc");
    if batch && low_memory {
        if midm::alloc::switch_to_system() {
            eprintln!("low memory: allocating from glibc's malloc");
        } else {
            eprintln!("low memory: not available here (no glibc); allocating from mimalloc");
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Some(Command::Translate(args)) => midm::cli::run_translate(&args),
        Some(Command::Batch(args)) => midm::cli::run_batch(&args),
        Some(Command::Bench(args)) => run_bench(&args),
        #[cfg(feature = "gui")]
        None => midm::ui::run_app(midm::ui::AppArgs {
            model: cli.model,
            condition: cli.condition,
            exemplar: cli.exemplar,
            run: cli.run,
            // Set from the window's renderer once it exists.
            ..Default::default()
        }),
        #[cfg(not(feature = "gui"))]
        None => {
            let _ = (cli.model, cli.condition, cli.exemplar, cli.run);
            anyhow::bail!("this midm was built without the editor (feature `gui`); use `midm translate` or `midm bench`")
        }
    }
}
