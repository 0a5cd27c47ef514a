//! `chatd`: parse flags, validate them, bind, run. All logic lives in the
//! library; this file only turns the command line into a [`Config`].

use std::process::ExitCode;

use chatd::config::Flags;
use chatd::logfile::LogFile;
use chatd::server::Server;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("export") {
        let rest: Vec<&str> = args.iter().skip(2).map(String::as_str).collect();
        return export(&rest);
    }
    if args.get(1).map(String::as_str) == Some("admin") {
        let rest: Vec<&str> = args.iter().skip(2).map(String::as_str).collect();
        return admin(&rest);
    }
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

/// A subcommand's flags; `Err` is the exit code once argh's text (usage,
/// or `--help`) is printed.
fn sub_flags<T: argh::FromArgs>(name: &str, args: &[&str]) -> Result<T, ExitCode> {
    T::from_args(&[name], args).map_err(|e| {
        if e.status.is_ok() {
            println!("{}", e.output);
            ExitCode::SUCCESS
        } else {
            eprintln!("{}", e.output);
            ExitCode::from(2)
        }
    })
}

/// `chatd export ...`: see `chatd::export` and chatd(8).
fn export(args: &[&str]) -> ExitCode {
    let flags: chatd::export::Flags = match sub_flags("chatd export", args) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let opts = match flags.options(std::env::var("STATE_DIRECTORY").ok()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("chatd export: {e}");
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match chatd::export::run(&opts, &mut out) {
        Ok(s) => {
            let mut note = format!(
                "chatd export: {} room lines from {} rooms, {} direct messages",
                s.lines, s.rooms, s.dms
            );
            if let Some(at) = s.stopped_at {
                note.push_str(&format!(
                    "; the journal's readable part ends at byte {at} (a record being written, or damage chatd cuts on its next start)"
                ));
            }
            eprintln!("{note}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chatd export: {e}");
            ExitCode::from(1)
        }
    }
}

/// `chatd admin ...`: see `chatd::admin` and chatd(8).
fn admin(args: &[&str]) -> ExitCode {
    use chatd::admin::{Cmd, Flags};
    let flags: Flags = match sub_flags("chatd admin", args) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let Cmd::ResetPassword(r) = flags.cmd;
    let dir = chatd::admin::state_dir(r.state_dir, std::env::var("STATE_DIRECTORY").ok());
    let done =
        chatd::admin::read_password().and_then(|p| chatd::admin::reset_password(&dir, &r.nick, &p));
    match done {
        Ok(()) => {
            eprintln!(
                "chatd admin: {}'s password is reset; it takes effect when chatd starts",
                r.nick
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chatd admin: {e}");
            ExitCode::from(1)
        }
    }
}
