//! `chatd`: parse flags, validate them, bind, run. All logic lives in the
//! library; this file only turns the command line into a [`Config`].

use std::process::ExitCode;

use chatd::config::Flags;
use chatd::logfile::LogFile;
use chatd::server::Server;

fn main() -> ExitCode {
    let flags: Flags = argh::from_env();
    if flags.version {
        println!("chatd {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    let log_file = match flags
        .log_file
        .as_deref()
        .map(|p| LogFile::open(std::path::Path::new(p)))
    {
        None => None,
        Some(Ok(f)) => {
            logger.target(env_logger::Target::Pipe(Box::new(f.clone())));
            Some(f)
        }
        Some(Err(e)) => {
            eprintln!("chatd: --log-file: {e}");
            return ExitCode::from(2);
        }
    };
    logger.init();
    let settings = flags.settings(std::env::var("STATE_DIRECTORY").ok());
    let cfg = match settings.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chatd: {e}");
            return ExitCode::from(2);
        }
    };
    let mut server = match Server::from_config(cfg) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(1);
        }
    };
    if let Some(f) = log_file {
        server.set_log_file(f);
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::from(1)
        }
    }
}
