//! Settings from a TOML file: `--config FILE`, whose keys are the program's long flag names
//! and whose values are what those flags take (`brokers = 4`, `lease = "30s"`, `preload =
//! true`).
//!
//! The file's settings become flags placed before the command line's, and the command is
//! parsed with clap's `args_override_self`, so a flag given on the command line overrides the
//! file's key, and every check clap makes of a flag (its values, conflicts, requirements) holds
//! for the file too. Before that, each key is checked on its own against its flag's value
//! parser, so a bad file stops start-up naming the file, the line and the key. A setting whose
//! flag also reads an environment variable (`BROKER_ENDPOINT`) gives way to that variable when
//! it is set: the command line, then the environment, then the file, then the defaults.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::{Arg, ArgMatches, Command, CommandFactory, FromArgMatches};
use toml::{Spanned, Value};

/// The flag that names the file.
pub const FLAG: &str = "config";

/// Why the flags and the file could not be read.
#[derive(Debug)]
pub enum Refusal {
    /// The command line, or the file's settings taken as flags, did not parse.
    Flags(clap::Error),
    /// The file could not be read, or a key or value in it is wrong: the message names the
    /// file, the line and the key.
    File(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Flags(error) => write!(f, "{error}"),
            Refusal::File(message) => write!(f, "{message}"),
        }
    }
}

/// The command of `T` with `--config FILE` added, and each flag allowed again so that a
/// later one overrides an earlier one (the file's go first).
pub fn command<T: CommandFactory>() -> Command {
    T::command().args_override_self(true).arg(
        Arg::new(FLAG)
            .long(FLAG)
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help(
                "Read settings from this TOML file: each key is a long flag's name, e.g. \
                 `lease = \"30s\"`; flags given here override it",
            ),
    )
}

/// Parses the process's command line, with the file `--config` names, into `T`; exits as clap
/// does on `--help`, `--version` or a bad flag, and with status 2 and one line naming the
/// file's line and key on a bad file.
pub fn parse<T: CommandFactory + FromArgMatches>() -> T {
    match try_parse_from(std::env::args_os()) {
        Ok(args) => args,
        Err(Refusal::Flags(error)) => error.exit(),
        Err(Refusal::File(message)) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    }
}

/// Parses `argv` (the program's name first) with the file `--config` names, into `T`.
///
/// # Errors
/// A flag or a setting of the file is wrong, or the file cannot be read.
pub fn try_parse_from<T, I>(argv: I) -> Result<T, Refusal>
where
    T: CommandFactory + FromArgMatches,
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let mut cmd = command::<T>();
    if let Some(path) = config_path(&argv) {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Refusal::File(format!("cannot read {}: {e}", path.display())))?;
        let flags = settings(&cmd, &path, &text)?;
        let at = argv.len().min(1);
        argv.splice(at..at, flags);
    }
    let matches: ArgMatches = cmd.try_get_matches_from_mut(argv).map_err(Refusal::Flags)?;
    T::from_arg_matches(&matches).map_err(|e| Refusal::Flags(e.format(&mut cmd)))
}

/// The file `--config FILE` or `--config=FILE` names, the last one given; none after `--`.
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut found = None;
    let mut words = argv.iter().skip(1);
    let long = format!("--{FLAG}");
    let with_value = format!("--{FLAG}=");
    while let Some(word) = words.next() {
        let Some(text) = word.to_str() else { continue };
        if text == "--" {
            break;
        } else if text == long {
            found = words.next().map(PathBuf::from);
        } else if let Some(path) = text.strip_prefix(&with_value) {
            found = Some(PathBuf::from(path));
        }
    }
    found
}

/// The flags `text`, the file at `path`, stands for, each checked against its flag.
///
/// # Errors
/// The text is not TOML, or a key is not a flag, or its value is not one the flag takes: the
/// message names `path`, the line and the key.
pub fn settings(cmd: &Command, path: &Path, text: &str) -> Result<Vec<OsString>, Refusal> {
    let file = path.display();
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let table: BTreeMap<Spanned<String>, Spanned<Value>> = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |span| line_of(span.start));
        Refusal::File(format!("{file}:{line}: {}", e.message().trim_end()))
    })?;
    let mut flags = Vec::new();
    for (key, value) in &table {
        let line = line_of(key.span().start);
        let name = key.get_ref().as_str();
        let refuse = |why: String| Refusal::File(format!("{file}:{line}: key `{name}`: {why}"));
        let arg = cmd
            .get_arguments()
            .find(|arg| arg.get_long() == Some(name) && name != FLAG && !arg.is_hide_set())
            .ok_or_else(|| {
                refuse(format!(
                    "unknown key: the keys are the long flags `{} --help` lists",
                    cmd.get_name()
                ))
            })?;
        if arg.get_env().is_some_and(|env| std::env::var_os(env).is_some()) {
            continue;
        }
        if !arg.get_action().takes_values() {
            match value.get_ref() {
                Value::Boolean(true) => flags.push(OsString::from(format!("--{name}"))),
                Value::Boolean(false) => {}
                _ => return Err(refuse("expected true or false".into())),
            }
            continue;
        }
        let values = match value.get_ref() {
            Value::Array(items) => {
                let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1)
                    || matches!(arg.get_action(), clap::ArgAction::Append);
                if !many {
                    return Err(refuse("takes one value, not a list".into()));
                }
                items.iter().map(scalar).collect::<Result<Vec<_>, _>>()
            }
            one => scalar(one).map(|v| vec![v]),
        }
        .map_err(refuse)?;
        for value in values {
            let flag = OsString::from(format!("--{name}={value}"));
            check_value(cmd, &flag).map_err(&refuse)?;
            flags.push(flag);
        }
    }
    Ok(flags)
}

/// Whether `flag` alone passes its value parser. (clap keeps a value parser's own call to
/// itself, so the flag is parsed on its own, and what follows the values, such as missing
/// requirements or conflicts, is left to the parse of the whole command line.)
fn check_value(cmd: &Command, flag: &OsStr) -> Result<(), String> {
    use clap::error::ErrorKind;
    let mut alone = cmd.clone();
    match alone.try_get_matches_from_mut([OsStr::new(cmd.get_name()), flag]) {
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::InvalidValue
                    | ErrorKind::ValueValidation
                    | ErrorKind::InvalidUtf8
                    | ErrorKind::TooManyValues
                    | ErrorKind::WrongNumberOfValues
                    | ErrorKind::NoEquals
            ) =>
        {
            Err(first_line(&error))
        }
        _ => Ok(()),
    }
}

/// A TOML value as the text a flag would be given.
fn scalar(value: &Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Integer(n) => Ok(n.to_string()),
        Value::Float(x) => Ok(x.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        Value::Datetime(d) => Ok(d.to_string()),
        Value::Array(_) | Value::Table(_) => Err("expected a string, number or boolean".into()),
    }
}

/// What clap said, without its `error: ` and its hint lines.
fn first_line(error: &clap::Error) -> String {
    let text = error.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// The keys a config file of `cmd` may hold: its long flags but `--help`, `--version` and
/// `--config`.
pub fn keys(cmd: &Command) -> Vec<String> {
    cmd.get_arguments()
        .filter(|arg| !arg.is_hide_set())
        .filter_map(Arg::get_long)
        .filter(|long| !matches!(*long, "help" | "version" | FLAG))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::io::Write;
    use std::time::Duration;

    /// A program with a flag of each kind.
    #[derive(Debug, Parser)]
    struct Args {
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=9))]
        brokers: u32,
        #[arg(long, default_value = "30s", value_parser = humantime_like)]
        lease: Duration,
        #[arg(long)]
        preload: bool,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, conflicts_with = "data_dir")]
        store: Option<String>,
    }

    fn humantime_like(text: &str) -> Result<Duration, String> {
        let secs = text.strip_suffix('s').ok_or("expected a number of seconds, `30s`")?;
        secs.parse().map(Duration::from_secs).map_err(|e| format!("{e}"))
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    fn parse(argv: &[&str]) -> Result<Args, Refusal> {
        try_parse_from(std::iter::once("prog").chain(argv.iter().copied()))
    }

    #[test]
    fn the_file_sets_and_the_command_line_overrides() {
        let f = file("brokers = 4\nlease = \"5s\"\npreload = true\ndata-dir = \"/d\"\n");
        let path = f.path().to_str().unwrap();
        let args = parse(&["--config", path]).unwrap();
        assert_eq!(args.brokers, 4);
        assert_eq!(args.lease, Duration::from_secs(5));
        assert!(args.preload);
        assert_eq!(args.data_dir, Some(PathBuf::from("/d")));
        let args = parse(&["--brokers", "7", &format!("--config={path}")]).unwrap();
        assert_eq!(args.brokers, 7);
        assert_eq!(args.lease, Duration::from_secs(5));
        let args = parse(&["--brokers", "3"]).unwrap();
        assert_eq!((args.brokers, args.preload), (3, false));
    }

    #[test]
    fn an_unknown_key_or_a_bad_value_names_the_file_line_and_key() {
        for (text, line, key, why) in [
            ("brokers = 4\n\nbrokrs = 2\n", 3, "brokrs", "unknown key"),
            ("# a comment\nbrokers = 40\n", 2, "brokers", "40 is not in 1..=9"),
            ("lease = \"soon\"\n", 1, "lease", "expected a number of seconds"),
            ("preload = \"yes\"\n", 1, "preload", "expected true or false"),
            ("brokers = [1, 2]\n", 1, "brokers", "takes one value"),
            ("config = \"other.toml\"\n", 1, "config", "unknown key"),
        ] {
            let f = file(text);
            let path = f.path().to_str().unwrap();
            let Err(Refusal::File(message)) = parse(&["--config", path]) else {
                panic!("{text:?} was accepted");
            };
            let start = format!("{path}:{line}: key `{key}`: ");
            assert!(message.starts_with(&start), "{message}");
            assert!(message.contains(why), "{message}");
        }
    }

    #[test]
    fn a_file_that_is_not_toml_or_not_there_is_refused_with_its_name() {
        let f = file("brokers = 4\nlease = \n");
        let path = f.path().to_str().unwrap();
        let Err(Refusal::File(message)) = parse(&["--config", path]) else { panic!() };
        assert!(message.starts_with(&format!("{path}:2: ")), "{message}");
        let Err(Refusal::File(message)) = parse(&["--config", "/nonexistent/x.toml"]) else {
            panic!()
        };
        assert!(message.starts_with("cannot read /nonexistent/x.toml"), "{message}");
    }

    #[test]
    fn the_file_meets_the_same_conflicts_as_the_flags() {
        let f = file("data-dir = \"/d\"\n");
        let path = f.path().to_str().unwrap();
        assert!(matches!(parse(&["--config", path, "--store", "x"]), Err(Refusal::Flags(_))));
    }

    #[test]
    fn the_keys_are_the_long_flags() {
        let keys = keys(&command::<Args>());
        assert_eq!(keys, ["brokers", "lease", "preload", "data-dir", "store"]);
    }
}
