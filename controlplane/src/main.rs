use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = codeb::cli::Cli::parse();
    codeb::config::init_logging(&cli.settings);
    match codeb::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("codeb: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
