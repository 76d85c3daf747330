//! The command line, parsed by clap, its errors reworded as the viewer's
//! own one-line messages (exit code 2).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Parser, Subcommand};

use crate::{Failure, usage};

/// Look at the runs in a parapipe profile database.
///
/// Exit codes: 0 success, 1 data error (no database, no such run), 2 usage
/// error.
#[derive(Debug, Parser)]
#[command(name = "parapipe-profile", version, disable_help_subcommand = true)]
struct Cli {
    /// The database file, or a folder holding profiles.sqlite (default:
    /// $PARAPIPE_PROFILE_DIR/profiles.sqlite, else the profiler's default
    /// folder).
    #[arg(long, global = true, value_name = "PATH", value_parser = path)]
    db: Option<PathBuf>,
    /// svg: write the chart to FILE instead of stdout.
    #[arg(short, long, global = true, value_name = "FILE", value_parser = path)]
    output: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Which>,
}

#[derive(Debug, Subcommand)]
enum Which {
    /// Every run: id, name, start (UTC), duration, items, outcome.
    List,
    /// One run, one row per stage (default: the latest run), then the
    /// items each worker of a stage took; for a distributed job, also the
    /// job's status per stage and process.
    Show {
        #[arg(value_name = "RUN", value_parser = run_id)]
        run: Option<i64>,
    },
    /// Two runs side by side per stage: mean latency, throughput, B/A.
    Compare {
        #[arg(value_name = "RUN_A", value_parser = run_id)]
        a: Option<i64>,
        #[arg(value_name = "RUN_B", value_parser = run_id)]
        b: Option<i64>,
    },
    /// One run as an SVG chart: throughput, latency (log scale), items
    /// per worker and queue depth over time (default: the latest run, to
    /// stdout).
    Svg {
        #[arg(value_name = "RUN", value_parser = run_id)]
        run: Option<i64>,
    },
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    List,
    Show(Option<i64>),
    Compare(i64, i64),
    Svg(Option<i64>, Option<PathBuf>),
}

#[derive(Debug)]
pub(crate) struct Args {
    pub(crate) db: Option<PathBuf>,
    pub(crate) command: Command,
}

fn path(value: &str) -> Result<PathBuf, String> {
    match value.is_empty() {
        true => Err("needs a non-empty path".to_owned()),
        false => Ok(PathBuf::from(value)),
    }
}

fn run_id(value: &str) -> Result<i64, String> {
    value
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("run id must be a positive whole number, not '{value}'"))
}

/// The command line; `--help` and `--version` come back as
/// [`Failure::Print`], the text to print.
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, Failure> {
    let args: Vec<OsString> = args.into_iter().collect();
    let cli = match Cli::try_parse_from(
        std::iter::once(OsString::from("parapipe-profile")).chain(args.iter().cloned()),
    ) {
        Ok(cli) => cli,
        Err(e) => return Err(reword(&e, &args)),
    };
    let command = match cli.command {
        None => return Err(usage("missing command: list, show, compare or svg")),
        Some(Which::List) => Command::List,
        Some(Which::Show { run }) => Command::Show(run),
        Some(Which::Compare {
            a: Some(a),
            b: Some(b),
        }) => Command::Compare(a, b),
        Some(Which::Compare { .. }) => {
            return Err(usage("compare needs two run ids: compare RUN_A RUN_B"));
        }
        Some(Which::Svg { run }) => Command::Svg(run, cli.output.clone()),
    };
    if cli.output.is_some() && !matches!(command, Command::Svg(..)) {
        return Err(usage("-o/--output is only for the svg command"));
    }
    Ok(Args {
        db: cli.db,
        command,
    })
}

/// clap's error as one line of the viewer's words; help and version are
/// not errors.
fn reword(e: &clap::Error, args: &[OsString]) -> Failure {
    let context = |kind: ContextKind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => v.first().cloned(),
        _ => None,
    };
    let suggestion = |kind: ContextKind| {
        context(kind)
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default()
    };
    // The flag as the user wrote it: clap names it by its long form.
    let as_typed = |named: &str| {
        let long = named.split([' ', '=']).next().unwrap_or(named).to_owned();
        args.iter()
            .filter_map(|a| a.to_str())
            .rev()
            .find(|a| long == *a || (long == "--output" && *a == "-o"))
            .map_or(long.clone(), str::to_owned)
    };
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Failure::Print(e.to_string()),
        ErrorKind::InvalidSubcommand => usage(format!(
            "unknown command '{}' (expected list, show, compare or svg){}",
            context(ContextKind::InvalidSubcommand).unwrap_or_default(),
            suggestion(ContextKind::SuggestedSubcommand)
        )),
        ErrorKind::UnknownArgument => {
            let arg = context(ContextKind::InvalidArg).unwrap_or_default();
            match arg.starts_with('-') {
                true => usage(format!(
                    "unknown option '{arg}'{}",
                    suggestion(ContextKind::SuggestedArg)
                )),
                false => usage(format!("unexpected argument '{arg}'")),
            }
        }
        ErrorKind::InvalidValue | ErrorKind::NoEquals => {
            let arg = context(ContextKind::InvalidArg).unwrap_or_default();
            usage(format!("{} needs a path", as_typed(&arg)))
        }
        ErrorKind::ValueValidation => {
            let arg = context(ContextKind::InvalidArg).unwrap_or_default();
            // Our own value parsers' words.
            let why = std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.kind().to_string());
            match arg.starts_with('-') {
                true => usage(format!("{} {why}", as_typed(&arg))),
                false => usage(why),
            }
        }
        ErrorKind::ArgumentConflict => {
            let arg = context(ContextKind::InvalidArg).unwrap_or_default();
            usage(format!("{} given twice", as_typed(&arg)))
        }
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            usage("missing command: list, show, compare or svg")
        }
        _ => {
            let first = e.to_string();
            let line = first.lines().next().unwrap_or("invalid command line");
            usage(line.trim_start_matches("error: ").to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, Failure> {
        parse(list.iter().map(OsString::from))
    }

    fn command(list: &[&str]) -> Args {
        match args(list) {
            Ok(args) => args,
            Err(e) => panic!("{list:?}: {e:?}"),
        }
    }

    #[test]
    fn parses_commands_and_options_anywhere() {
        let a = command(&["--db", "x.sqlite", "show", "3"]);
        assert_eq!(a.db, Some(PathBuf::from("x.sqlite")));
        assert_eq!(a.command, Command::Show(Some(3)));
        let a = command(&["svg", "-o", "out.svg", "--db=y"]);
        assert_eq!(
            a.command,
            Command::Svg(None, Some(PathBuf::from("out.svg")))
        );
        assert_eq!(a.db, Some(PathBuf::from("y")));
        assert_eq!(
            command(&["compare", "1", "2"]).command,
            Command::Compare(1, 2)
        );
        assert!(matches!(args(&["list", "-h"]), Err(Failure::Print(_))));
        assert!(matches!(args(&["--version"]), Err(Failure::Print(_))));
    }

    #[test]
    fn rejects_bad_command_lines() {
        for bad in [
            &[][..],
            &["frobnicate"],
            &["list", "--verbose"],
            &["show", "abc"],
            &["show", "0"],
            &["show", "1", "2"],
            &["compare", "1"],
            &["list", "-o", "x"],
            &["--db"],
            &["--db", "a", "--db", "b", "list"],
        ] {
            assert!(matches!(args(bad), Err(Failure::Usage(_))), "{bad:?}");
        }
    }

    #[test]
    fn suggests_what_was_meant() {
        match args(&["shwo"]) {
            Err(Failure::Usage(msg)) => assert!(msg.contains("did you mean 'show'"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
}
